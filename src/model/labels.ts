// Class names from a file a user has: one name per line (synset files, torchvision's categories), a JSON list, or a
// JSON object from index to name (ImageNet's imagenet_class_index.json, whose values are [wnid, name]).
import { readFileSync } from 'node:fs';

export function readClassNames(path: string, classes: number): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read labels file ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  const names = parseNames(text, path);
  if (names.length !== classes) throw new Error(`labels file ${path} has ${names.length} names; the model has ${classes} classes`);
  const blank = names.findIndex((n) => n.length === 0);
  if (blank >= 0) throw new Error(`labels file ${path}: class ${blank} has an empty name`);
  return names;
}

function parseNames(text: string, path: string): string[] {
  const trimmed = text.trim();
  if (trimmed.startsWith('[') || trimmed.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(trimmed);
    } catch (e) {
      throw new Error(`labels file ${path} is not valid JSON: ${(e as Error).message}`);
    }
    const nameOf = (v: unknown, at: string): string => {
      const last = Array.isArray(v) ? v[v.length - 1] : v;
      if (typeof last !== 'string') throw new Error(`labels file ${path}: entry ${at} is not a name`);
      return last.trim();
    };
    if (Array.isArray(json)) return json.map((v, i) => nameOf(v, String(i)));
    const entries = Object.entries(json as Record<string, unknown>);
    const names: string[] = [];
    for (const [key, v] of entries) {
      if (!/^\d+$/.test(key) || Number(key) >= entries.length) throw new Error(`labels file ${path}: key '${key}' is not a class index 0..${entries.length - 1}`);
      names[Number(key)] = nameOf(v, key);
    }
    return names;
  }
  return trimmed.split(/\r?\n/).map((l) => l.trim());
}
