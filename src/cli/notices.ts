// What a command says before its work (what the model is fed, what a scan will cover, how data was cut) is held
// until the work begins: input refused after those lines is still one line on stderr, the error.
let pending: string[] = [];

/** A line for stderr once the work starts (or the command succeeds); dropped if the command fails first. */
export function notice(line: string): void {
  pending.push(line);
}

export function flushNotices(): void {
  for (const line of pending) process.stderr.write(`${line}\n`);
  pending = [];
}

export function dropNotices(): void {
  pending = [];
}

/** A line about the work in progress: the held notices go first. */
export function say(line: string): void {
  flushNotices();
  process.stderr.write(`${line}\n`);
}
