import type { Model } from '../model/layers.js';

/**
 * The paper's two layers of a figure where the model has the paper's layer sequence (else undefined: a model without
 * it still runs with --layers, only the default is missing), and a title that says which paper layer a layer is
 * ("relu1 (layer 1)").
 */
export function paperLayerTitles(model: Model, pick: (m: Model) => [string, string], names: [string, string]): { layers?: [string, string]; title: (layer: string) => string } {
  let layers: [string, string] | undefined;
  try {
    layers = pick(model);
  } catch {
    layers = undefined;
  }
  const paper: Record<string, string> = layers ? { [layers[0]]: names[0], [layers[1]]: names[1] } : {};
  return { layers, title: (l) => (paper[l] ? `${l} (${paper[l]})` : l) };
}
