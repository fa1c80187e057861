/**
 * A half-open rectangle of pixels or map positions: rows [y0, y1), columns [x0, x1). The one rectangle type of the
 * code; files keep their own JSON forms and convert at the boundary.
 */
export type Rect = [y0: number, x0: number, y1: number, x1: number];

export function rectHeight(r: Rect): number {
  return r[2] - r[0];
}

export function rectWidth(r: Rect): number {
  return r[3] - r[1];
}

export function rectArea(r: Rect): number {
  return Math.max(0, rectHeight(r)) * Math.max(0, rectWidth(r));
}

/** The overlap of two rectangles; empty (zero area) when they do not meet. */
export function intersectRect(a: Rect, b: Rect): Rect {
  const y0 = Math.max(a[0], b[0]);
  const x0 = Math.max(a[1], b[1]);
  return [y0, x0, Math.max(y0, Math.min(a[2], b[2])), Math.max(x0, Math.min(a[3], b[3]))];
}
