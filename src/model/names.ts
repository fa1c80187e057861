// The names a user may type for a layer: the layer's own name (the module path, `layer3.1.relu_1`), a module's name
// (`layer3`, `features.7`: the module's output), or, for a model read from ONNX, a node or data-tensor name of the file.
import { inputsOf } from './graph.js';
import { unknownLayer, type Model } from './layers.js';

/**
 * The output layer of the module `prefix` (every layer named `prefix.…`): the last of its layers, in topological
 * order, whose output a layer outside the module reads, or the model's last layer. Undefined when no layer is under it.
 */
export function moduleOutput(model: Pick<Model, 'layers'>, prefix: string): string | undefined {
  const inside = (name: string) => name.startsWith(`${prefix}.`);
  const members = new Set(model.layers.filter((l) => inside(l.name)).map((l) => l.name));
  if (members.size === 0) return undefined;
  const readOutside = new Set<string>();
  model.layers.forEach((l, i) => {
    if (!members.has(l.name)) for (const p of inputsOf(model.layers, i)) if (members.has(p)) readOutside.add(p);
  });
  const last = model.layers[model.layers.length - 1].name;
  if (members.has(last)) readOutside.add(last);
  return model.layers.filter((l) => readOutside.has(l.name)).at(-1)?.name;
}

/** The layer a typed name stands for (see the file comment); an unknown name is a one-line error with close names. */
export function resolveLayer(model: Pick<Model, 'layers' | 'onnxNames'>, name: string): string {
  if (model.layers.some((l) => l.name === name)) return name;
  const fromOnnx = model.onnxNames?.get(name);
  if (fromOnnx !== undefined && model.layers.some((l) => l.name === fromOnnx)) return fromOnnx;
  const output = moduleOutput(model, name);
  if (output !== undefined) return output;
  throw new Error(unknownLayer(model, name));
}
