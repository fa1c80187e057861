import { inputToImage } from '../data/image.js';
import type { Preprocess } from '../model/layers.js';
import type { Tensor } from '../tensor.js';
import { encodePng, projectionToImage, sideBySide } from './figure.js';

/** The `project --png` figure: the input (mean added back) beside its projection, captioned, as PNG bytes. */
export async function projectionFigurePng(input: Tensor, projection: Tensor, preprocess: Preprocess, caption: string): Promise<Buffer> {
  return encodePng(await sideBySide(inputToImage(input, preprocess), projectionToImage(projection), caption));
}
