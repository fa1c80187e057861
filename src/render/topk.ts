// The Fig. 2 layout of a top-k scan: per layer, for each feature map a grid of its top activations' deconvnet
// projections beside a grid of the image patches under their receptive fields, blocks in rows on pages.
import { blankImage, type RgbImage } from '../data/image.js';
import { slotsPerFeature } from '../analysis/topk.js';
import type { FeatureOrder, TopkField, TopkFigureViews, TopkPageViews, TopkView } from '../analysis/topk-views.js';
import { rectHeight, rectWidth } from '../util/rect.js';
import type { Rgb } from './colormap.js';
import { blit, grid, hstack, label, projectionToImage, upscale, vstack } from './figure.js';

/** Where the frame reaches past the image or the receptive field: a colour no projection (grey) or legend uses. */
const OUTSIDE: Rgb = [200, 218, 240];
const WHITE: Rgb = [255, 255, 255];
const BLOCKS_PER_ROW = 4;

/** Content of the clipped field placed in its frame; the rest of the frame painted OUTSIDE. */
function framed(content: RgbImage, field: TopkField): RgbImage {
  const out = blankImage(rectWidth(field.frame), rectHeight(field.frame), 3);
  for (let i = 0; i < out.width * out.height; i++) out.data.set(OUTSIDE, 3 * i);
  blit(out, content, field.clipped[0] - field.frame[0], field.clipped[1] - field.frame[1]);
  return out;
}

const fmt = (v: number) => (Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(2) : v.toPrecision(3));

/** One feature's block: k projections in a grid, the k patches in a grid beside it, a caption above; with a
 * synthetic image, it too, enlarged by a whole factor to at most the grids' height, captioned with its value. */
async function featureBlock(views: TopkView[], feature: number, k: number, frame: [number, number], factor: number, synthetic?: { image: RgbImage; value: number }): Promise<RgbImage> {
  const cols = Math.ceil(Math.sqrt(k));
  const empty = upscale(blankImage(frame[1], frame[0], 3, 255), factor);
  const cells = (make: (v: TopkView) => RgbImage) =>
    Array.from({ length: k }, (_, i) => (views[i] ? upscale(framed(make(views[i]), views[i].field), factor) : empty));
  const projections = grid(cells((v) => projectionToImage(v.projection)), cols, { gap: 2, background: WHITE });
  const patches = grid(cells((v) => v.patch), cols, { gap: 2, background: WHITE });
  const best = views[0]?.entry.value;
  const caption = best === undefined ? `#${feature}  no activations` : best > 0 ? `#${feature}  max ${fmt(best)}` : `#${feature}  inactive (max ${fmt(best)})`;
  const panels = [projections, patches];
  if (synthetic) {
    const enlarged = upscale(synthetic.image, Math.max(1, Math.floor(projections.height / synthetic.image.height)));
    panels.push(await label(enlarged, `synthetic ${fmt(synthetic.value)}`, { position: 'bottom', fontSize: 11, color: [70, 70, 70] }));
  }
  return label(hstack(panels, { gap: 6, background: WHITE }), caption, { position: 'top', fontSize: 12, align: 'left' });
}

interface PageContext {
  model: string;
  dataset: string;
  images: number;
  k: number;
  perImage: number;
  /** The layer's receptive field side(s) in input pixels. */
  rf: [number, number];
  order: FeatureOrder;
  synthetic: boolean;
  page: number;
  pages: number;
  features: number;
}

/** Blocks in rows of four, a title above and the legend below. */
async function topkPage(layer: string, blocks: RgbImage[], firstLast: [number, number], ctx: PageContext): Promise<RgbImage> {
  const rows: RgbImage[] = [];
  for (let i = 0; i < blocks.length; i += BLOCKS_PER_ROW) rows.push(hstack(blocks.slice(i, i + BLOCKS_PER_ROW), { gap: 14, background: WHITE }));
  let page = vstack(rows, { gap: 10, background: WHITE });
  const orderText = ctx.order === 'index' ? 'by index' : 'by max activation';
  const title = `${ctx.model} ${layer}: features ${firstLast[0] + 1}-${firstLast[1]} of ${ctx.features} (${orderText}), page ${ctx.page}/${ctx.pages}`;
  page = await label(page, title, { position: 'top', fontSize: 16, align: 'left' });
  const rf = ctx.rf[0] === ctx.rf[1] ? `${ctx.rf[0]}` : `${ctx.rf[0]}x${ctx.rf[1]}`;
  const legend =
    `Each block: one feature map's top ${ctx.k} activations over ${ctx.images} images of ${ctx.dataset} ` +
    `(at most ${ctx.perImage} per image), best first, row by row. Left: deconvnet projections, each scaled by its own max |value|, ` +
    `zero = mid-grey. Right: the image patches under the receptive field (${rf} px). Pale blue: outside the image or the receptive field.` +
    (ctx.synthetic ? ' Far right: a synthetic image that maximises the map\'s mean (activation maximisation), with the mean it reached.' : '');
  page = await label(page, legend, { position: 'bottom', fontSize: 12, align: 'left', color: [70, 70, 70] });
  const out = blankImage(page.width + 16, page.height + 16, 3, 255);
  blit(out, page, 8, 8);
  return out;
}

/** One page of a layer's figure; `cell` is the shown size of a frame's long side, reached by whole-number enlargement. */
export async function topkPageImage(figure: Pick<TopkFigureViews, 'result' | 'order'>, { layout, page, views, synthetic }: TopkPageViews, cell = 56): Promise<RgbImage> {
  const { result } = figure;
  const factor = Math.max(1, Math.round(cell / Math.max(...layout.frame)));
  const onPage = layout.pages[page];
  const k = slotsPerFeature(result);
  const blocks: RgbImage[] = [];
  for (const [i, feature] of onPage.entries()) blocks.push(await featureBlock(views[i], feature, k, layout.frame, factor, synthetic?.[i]));
  const first = layout.pages.slice(0, page).reduce((a, p) => a + p.length, 0);
  const ctx: PageContext = {
    model: result.model, dataset: result.dataset, images: result.images, k, perImage: result.perImage,
    rf: layout.receptiveField.size, order: figure.order, synthetic: synthetic !== undefined, page: page + 1, pages: layout.pages.length, features: layout.topk.features.length,
  };
  return topkPage(layout.topk.layer, blocks, [first, first + onPage.length], ctx);
}
