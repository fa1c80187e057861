/** The command line itself is wrong (an unknown or missing option, a malformed value): exit 2 with a pointer to --help. */
export class UsageError extends Error {}

export interface OptionSpec {
  /** Takes a value (`--layer conv5`) or is a flag (`--resume`). */
  value: boolean;
  help: string;
}

/** Parsed `--name value` options of one command; every getter validates and names the option in its error. */
export class Options {
  constructor(
    readonly command: string,
    private readonly values: Map<string, string | true>,
  ) {}

  has(name: string): boolean {
    return this.values.has(name);
  }

  string(name: string): string | undefined;
  string(name: string, fallback: string): string;
  string(name: string, fallback?: string): string | undefined {
    const v = this.values.get(name);
    return typeof v === 'string' ? v : fallback;
  }

  required(name: string): string {
    const v = this.string(name);
    if (v === undefined) throw new UsageError(`${this.command} needs --${name}`);
    return v;
  }

  int(name: string, fallback?: number, min = -Infinity): number {
    const v = this.string(name);
    if (v === undefined) {
      if (fallback === undefined) throw new UsageError(`${this.command} needs --${name}`);
      return fallback;
    }
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer${min > -Infinity ? ` >= ${min}` : ''}, got '${v}'`);
    return n;
  }

  number(name: string, fallback: number): number {
    const v = this.string(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${v}'`);
    return n;
  }

  numbers(name: string): number[] | undefined {
    const v = this.string(name);
    if (v === undefined) return undefined;
    const ns = v.split(',').map(Number);
    if (ns.some((n) => !Number.isFinite(n))) throw new UsageError(`--${name} must be comma-separated numbers, got '${v}'`);
    return ns;
  }

  choice<T extends string>(name: string, choices: readonly T[], fallback: T): T {
    const v = this.string(name, fallback);
    if (!choices.includes(v as T)) throw new UsageError(`--${name} must be one of ${choices.join(', ')}; got '${v}'`);
    return v as T;
  }

  flag(name: string): boolean {
    return this.values.get(name) === true;
  }
}

export function parseOptions(command: string, argv: string[], specs: Record<string, OptionSpec>): Options {
  const values = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new UsageError(`${command}: unexpected argument '${arg}'`);
    let name = arg.slice(2);
    let inline: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      inline = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const spec = specs[name];
    if (!spec) throw new UsageError(`${command}: unknown option --${name}`);
    if (!spec.value) {
      values.set(name, true);
      continue;
    }
    const v = inline ?? argv[++i];
    if (v === undefined) throw new UsageError(`--${name} needs a value`);
    values.set(name, v);
  }
  return new Options(command, values);
}

export function formatHelp(command: string, summary: string, specs: Record<string, OptionSpec>): string {
  const rows = Object.entries(specs).map(([name, s]) => [`--${name}${s.value ? ' V' : ''}`, s.help]);
  const width = Math.max(...rows.map(([a]) => a.length));
  return `convscope ${command}: ${summary}\n\n${rows.map(([a, b]) => `  ${a.padEnd(width)}  ${b}`).join('\n')}\n`;
}

/** One `convscope` command: its one-line summary, its options (whose help texts state the defaults) and what it runs. */
export interface Command {
  summary: string;
  options: Record<string, OptionSpec>;
  run(o: Options): Promise<void>;
}
