// The model as a graph: each layer reads the outputs of named producer layers (or the model input); absent inputs
// mean the previous layer, so a chain needs no names. Layers are listed in topological order.
import type { Layer } from './layers.js';

/** The name a layer's `inputs` uses for the model's input image. */
export const MODEL_INPUT = 'input';
/** Producer index of the model input. */
export const IMAGE = -1;

/** The inputs a layer reads when it names none: the layer before it, or the image for the first. */
export function defaultInputs(layers: readonly Layer[], index: number): string[] {
  return [index === 0 ? MODEL_INPUT : layers[index - 1].name];
}

export function inputsOf(layers: readonly Layer[], index: number): string[] {
  return layers[index].inputs ?? defaultInputs(layers, index);
}

export function isChainDefault(layers: readonly Layer[], index: number): boolean {
  const given = layers[index].inputs;
  return given === undefined || given.join('\0') === defaultInputs(layers, index).join('\0');
}

/**
 * Producer indices of every layer's inputs (IMAGE for the model input), checking that the layers form a DAG in
 * topological order with one output: each error is one line naming the layer.
 */
export function resolveInputs(layers: readonly Layer[]): number[][] {
  const index = new Map<string, number>();
  layers.forEach((l, i) => {
    if (l.name === MODEL_INPUT) throw new Error(`layer '${l.name}': the name '${MODEL_INPUT}' stands for the model input`);
    if (index.has(l.name)) throw new Error(`two layers are named '${l.name}'`);
    index.set(l.name, i);
  });
  const producers = layers.map((l, i) => {
    const names = inputsOf(layers, i);
    if (names.length === 0) throw new Error(`layer '${l.name}' has an empty inputs list`);
    return names.map((name) => {
      if (name === MODEL_INPUT) return IMAGE;
      const p = index.get(name);
      if (p === undefined) throw new Error(`layer '${l.name}' reads unknown input '${name}'`);
      if (p >= i) {
        if (reaches(layers, index, p, i)) throw new Error(`layer '${l.name}' is in a cycle through '${name}'`);
        throw new Error(`layer '${l.name}' reads '${name}', which is defined after it (list layers in the order they compute)`);
      }
      return p;
    });
  });
  const read = new Set(producers.flat());
  const sinks = layers.filter((_, i) => !read.has(i)).map((l) => `'${l.name}'`);
  if (sinks.length > 1) throw new Error(`the model has ${sinks.length} outputs (${sinks.join(', ')}); it must end in exactly one layer`);
  return producers;
}

/** Whether layer `from`'s inputs lead, through any producers, back to layer `to`. */
function reaches(layers: readonly Layer[], index: Map<string, number>, from: number, to: number): boolean {
  const seen = new Set<number>();
  const stack = [from];
  while (stack.length > 0) {
    const i = stack.pop()!;
    if (i === to) return true;
    if (seen.has(i)) continue;
    seen.add(i);
    for (const name of inputsOf(layers, i)) {
      const p = index.get(name);
      if (p !== undefined) stack.push(p);
    }
  }
  return false;
}

/** The layers with `inputs` dropped where they name just the chain default. */
export function withChainInputs(layers: readonly Layer[]): Layer[] {
  return layers.map((l, i) => {
    if (!l.inputs || !isChainDefault(layers, i)) return l;
    const { inputs: _, ...rest } = l;
    return rest as Layer;
  });
}

/** Whether every layer reads just the one before it. */
export function isChain(producers: readonly number[][]): boolean {
  return producers.every((ps, i) => ps.length === 1 && ps[0] === i - 1);
}
