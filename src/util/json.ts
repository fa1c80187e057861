/**
 * JSON for files a person reads: one key per line, and each array of plain values (numbers, booleans, null) on one
 * line. Non-finite numbers, which JSON cannot hold, are written as null.
 */
export function compactJson(value: unknown): string {
  const text = JSON.stringify(value, (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1);
  // An array with no nested array, object or string inside holds plain values only.
  return `${text.replace(/\[[^[\]{}"]*\]/g, (a) => a.replace(/\s+/g, ''))}\n`;
}
