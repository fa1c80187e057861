/** The command line itself is wrong (an unknown or missing option, a malformed value): exit 2 with a pointer to --help. */
export class UsageError extends Error {}

export interface OptionSpec {
  /** Takes a value (`--layer conv5`) or is a flag (`--resume`). */
  value: boolean;
  /** What the option sets; the help adds " (default X)" from `default`, so the text does not spell it. */
  help: string;
  /**
   * The value used when the option is not given, written once: the getters fall back to it and the help shows it.
   * A default that depends on the data or the model is explained in `help` instead, and the command computes it.
   */
  default?: string | number;
  /** May be given several times (`--allow a --allow b`); read with `list`. */
  repeatable?: boolean;
}

/**
 * Parsed `--name value` options of one command. Every getter reads the given value, else the spec's default,
 * validates it and names the option in its error. A value the command computes when the option is absent is
 * written `o.has(name) ? o.int(name, min) : computed`.
 */
export class Options {
  constructor(
    readonly command: string,
    private readonly values: Map<string, string | true>,
    private readonly specs: Record<string, OptionSpec>,
  ) {}

  /** The option was given on the command line (a default does not count). */
  has(name: string): boolean {
    return this.values.has(this.known(name));
  }

  /** The given value, else the default as a string, else undefined. */
  string(name: string): string | undefined {
    const v = this.values.get(this.known(name));
    if (typeof v === 'string') return v;
    const d = this.specs[name].default;
    return d === undefined ? undefined : String(d);
  }

  /** The given value, else the default; with neither, a usage error. */
  required(name: string): string {
    const v = this.string(name);
    if (v === undefined) throw new UsageError(`${this.command} needs --${name}`);
    return v;
  }

  /** Decimal digits only: Number() would read '' as 0 and '0x10' as 16. */
  int(name: string, min = -Infinity): number {
    const v = this.required(name);
    const n = /^-?\d+$/.test(v.trim()) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer${min > -Infinity ? ` >= ${min}` : ''}, got '${v}'`);
    return n;
  }

  number(name: string): number {
    const v = this.required(name);
    const n = v.trim() === '' ? NaN : Number(v);
    if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${v}'`);
    return n;
  }

  /** Comma-separated numbers, or undefined when the option has neither a value nor a default. */
  numbers(name: string): number[] | undefined {
    const v = this.string(name);
    if (v === undefined) return undefined;
    const ns = v.split(',').map((x) => (x.trim() === '' ? NaN : Number(x)));
    if (ns.some((n) => !Number.isFinite(n))) throw new UsageError(`--${name} must be comma-separated numbers, got '${v}'`);
    return ns;
  }

  choice<T extends string>(name: string, choices: readonly T[]): T {
    const v = this.required(name);
    if (!choices.includes(v as T)) throw new UsageError(`--${name} must be one of ${choices.join(', ')}; got '${v}'`);
    return v as T;
  }

  /** Every value of a repeatable option, in the order given (empty when absent). */
  list(name: string): string[] {
    const v = this.values.get(this.known(name));
    if (!this.specs[name].repeatable) throw new Error(`${this.command} reads --${name} as a list, which its spec does not allow`);
    return typeof v === 'string' ? v.split('\0') : [];
  }

  flag(name: string): boolean {
    return this.values.get(this.known(name)) === true;
  }

  /** A getter asking for an option its command does not declare is a bug in the command, not in the command line. */
  private known(name: string): string {
    if (!Object.hasOwn(this.specs, name)) throw new Error(`${this.command} reads --${name}, which it does not declare`);
    return name;
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
    const earlier = values.get(name);
    // A repeatable option's values are kept NUL-separated: no path or name a user types contains a NUL.
    values.set(name, spec.repeatable && typeof earlier === 'string' ? `${earlier}\0${v}` : v);
  }
  return new Options(command, values, specs);
}

export function formatHelp(command: string, summary: string, specs: Record<string, OptionSpec>): string {
  const rows = Object.entries(specs).map(([name, s]) => [`--${name}${s.value ? ' V' : ''}`, s.default === undefined ? s.help : `${s.help} (default ${s.default})`]);
  const width = Math.max(...rows.map(([a]) => a.length));
  return `convscope ${command}: ${summary}\n\n${rows.map(([a, b]) => `  ${a.padEnd(width)}  ${b}`).join('\n')}\n`;
}

/** One `convscope` command: its one-line summary, its options (with their defaults) and what it runs. */
export interface Command {
  summary: string;
  options: Record<string, OptionSpec>;
  run(o: Options): Promise<void>;
}
