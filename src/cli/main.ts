#!/usr/bin/env node
import { formatHelp, parseOptions, UsageError, type OptionSpec } from './args.js';
import { COMMANDS } from './commands.js';
import { errorLine } from '../util/errors.js';
import { dropNotices, flushNotices } from './notices.js';

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    'convscope: see what a convolutional network has learned (Zeiler & Fergus 2014)',
    '',
    'usage: convscope <command> [--option value ...]   (convscope <command> --help for its options)',
    '',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
  ].join('\n');
}

/** Runs one CLI invocation; returns the exit code (0 ok, 2 bad input or failure). */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  const command = COMMANDS[name];
  try {
    if (!command) throw new UsageError(`unknown command '${name}'; commands: ${Object.keys(COMMANDS).join(', ')}`);
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(formatHelp(name, command.summary, command.options as Record<string, OptionSpec>));
      return 0;
    }
    await command.run(parseOptions(name, rest, command.options));
    flushNotices();
    return 0;
  } catch (e) {
    // A usage error is the caller's to fix from the help text: point at it. Bad data or a failed run needs no hint.
    const hint = e instanceof UsageError ? ` (see convscope ${command ? `${name} ` : ''}--help)` : '';
    dropNotices();
    process.stderr.write(`convscope: ${errorLine(e)}${hint}\n`);
    return 2;
  }
}

const isEntry = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isEntry) {
  // A full disk or a closed pipe behind stdout (inspect > /dev/full) arrives as an 'error' event: one line, exit 2.
  process.stdout.on('error', (e) => {
    process.stderr.write(`convscope: cannot write the output: ${errorLine(e)}\n`);
    process.exit(2);
  });
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
