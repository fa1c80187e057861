/** The message of anything thrown, cut to its first line: onnxruntime and sharp errors span lines, the first says what went wrong. */
export function errorLine(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  // A message cut at its first line may end in the colon that introduced the next: drop it.
  return (message.split('\n').find((line) => line.trim() !== '')?.trim() ?? message.trim()).replace(/:$/, '');
}
