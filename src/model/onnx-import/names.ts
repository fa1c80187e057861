// Layer names a user can type: the module path as PyTorch spells it (`layer3.1.relu_1`, `features.7`), read from the
// weights' state_dict keys or from the scopes torch.onnx.export writes into node names.
import type { NodeProto } from '../../onnx/proto.js';
import type { Layer } from '../layers.js';

/**
 * The module path of the module that holds a node, from torch.onnx.export's scope name: `/layer1/layer1.1/relu_1/Relu`
 * -> `layer1.1.relu_1`, `/layer2/layer2.0/downsample/downsample.0/Conv` -> `layer2.0.downsample.0`. Each scope is
 * either the module's attribute name (`relu_1`: the second call of `relu`) or, for a child of a Sequential, its
 * parent scope with the index appended (`downsample.0`). Undefined for a node at the top (`/Flatten`) or unscoped.
 */
export function modulePath(nodeName: string): string | undefined {
  if (!nodeName.startsWith('/')) return undefined;
  const scopes = nodeName.split('/').filter((p) => p !== '').slice(0, -1);
  if (scopes.length === 0) return undefined;
  let path = '';
  let previous = '';
  for (const s of scopes) {
    path = previous !== '' && s.startsWith(`${previous}.`) ? path + s.slice(previous.length) : path === '' ? s : `${path}.${s}`;
    previous = s;
  }
  return path;
}

/** `conv1.weight` -> `conv1`, `features.0.bias` -> `features.0`: the module path of a state_dict key. */
export function layerNameFromWeights(origins: string[]): string | undefined {
  for (const o of origins) {
    const m = /^(.+)\.(weight|bias|running_mean|running_var)$/.exec(o);
    if (m) return m[1];
  }
  return undefined;
}

export interface Named {
  layer: Layer;
  /** Where the layer's weights came from (state_dict keys when the export kept them). */
  origins: string[];
  node: NodeProto;
}

/**
 * Final names for imported layers, in topological order: each layer's module path (from its weights, else its node's
 * scope; a node at the top is named by its op, `flatten`). Where several layers share a module (SiLU = Sigmoid and
 * Mul), the last one takes the module's name and the others the name with their op appended
 * (`features.0.2.sigmoid`); an op directly in a module that has submodules always does (`layer1.0.add`: the name
 * `layer1.0` stands for the block's output). Any clash left is numbered (`_2`).
 */
export function finalLayerNames(layers: readonly Named[], reserved: ReadonlySet<string>): string[] {
  const bases = layers.map((l) => layerNameFromWeights(l.origins) ?? modulePath(l.node.name) ?? l.node.opType.toLowerCase());
  const lastOf = new Map<string, number>();
  bases.forEach((b, i) => lastOf.set(b, i));
  // A module with submodules (a residual block) is named by its output, which resolveLayer finds; an op written
  // directly in it (the block's Add) takes its op in the name, so that it does not take the module's name.
  const parents = new Set(bases.flatMap((b) => b.split('.').slice(1).map((_, k, parts) => b.split('.').slice(0, k + 1).join('.'))));
  const taken = new Set(reserved);
  return bases.map((base, i) => {
    const wanted = lastOf.get(base) === i && !parents.has(base) ? base : `${base}.${layers[i].layer.type}`;
    let name = wanted;
    for (let k = 2; taken.has(name); k++) name = `${wanted}_${k}`;
    taken.add(name);
    return name;
  });
}
