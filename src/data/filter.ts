// Class filters for datasets: the transfer experiment trains on some classes and probes on the others.
import { openDataset, subset, type Dataset, type OpenOptions } from './dataset.js';

/**
 * Class indices from a list such as `6-9`, `0,2,4`, `0-2,7` or class names (`disc,ring`), in the order given.
 * Names are matched exactly against `classes`.
 */
export function parseClassList(text: string, classes: readonly string[]): number[] {
  const out: number[] = [];
  for (const part of text.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    const range = /^(\d+)-(\d+)$/.exec(part);
    if (range) {
      const [a, b] = [Number(range[1]), Number(range[2])];
      if (a > b) throw new Error(`class range '${part}' is empty`);
      for (let c = a; c <= b; c++) out.push(c);
    } else if (/^\d+$/.test(part)) out.push(Number(part));
    else {
      const c = classes.indexOf(part);
      if (c < 0) throw new Error(`unknown class '${part}'; the classes are ${classes.join(', ')}`);
      out.push(c);
    }
  }
  if (out.length === 0) throw new Error(`no classes in '${text}'`);
  for (const c of out) if (c >= classes.length) throw new Error(`class ${c} is out of range 0..${classes.length - 1}`);
  if (new Set(out).size !== out.length) throw new Error(`class list '${text}' names a class twice`);
  return out;
}

/**
 * The items of the given classes, relabelled 0..k-1 in the order of `keep`, so that a model with k outputs can be
 * trained on them. Item order is the dataset's.
 */
export function filterClasses(ds: Dataset, keep: readonly number[]): Dataset {
  const newLabel = new Map(keep.map((c, i) => [c, i]));
  const indices: number[] = [];
  for (let i = 0; i < ds.size; i++) if (newLabel.has(ds.label(i))) indices.push(i);
  const view = subset(ds, indices, `${ds.name}[classes ${keep.join(',')}]`);
  const relabel = (label: number): number => newLabel.get(label)!;
  return {
    ...view,
    classes: keep.map((c) => ds.classes[c]),
    label: (i) => relabel(view.label(i)),
    item: async (i) => {
      const item = await view.item(i);
      return { ...item, label: relabel(item.label) };
    },
  };
}

/** `SPEC:classes=LIST` or `SPEC,classes=LIST` (LIST last, as it may hold commas) split into the two parts. */
export function splitClassSpec(spec: string): { base: string; classes?: string } {
  const m = /^(.*?)[:,]classes=(.+)$/.exec(spec);
  return m ? { base: m[1], classes: m[2] } : { base: spec };
}

/**
 * openDataset with an optional class filter at the end of the spec: `shapes:count=2000,classes=6-9`,
 * `fashion-mnist:classes=0-4`, `photos/:classes=cat,dog`.
 */
export async function openFilteredDataset(spec: string, opts: OpenOptions = {}): Promise<Dataset> {
  const { base, classes } = splitClassSpec(spec);
  const ds = await openDataset(base, opts);
  return classes === undefined ? ds : filterClasses(ds, parseClassList(classes, ds.classes));
}
