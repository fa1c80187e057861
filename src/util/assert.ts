/** Makes a switch over a union exhaustive: a new member that the switch does not handle fails to compile. */
export function assertNever(value: never, what = 'value'): never {
  throw new Error(`unhandled ${what}: ${JSON.stringify(value)}`);
}
