/** What both command-line programs share: option parsing errors and one-line failures. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { TetherError } from './errors';
import { printable, printableStack } from './printable';
import { UsageError } from './transport';
import { VERSION } from './version';

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

/**
 * Parses argv strictly; unknown flags become a UsageError naming the flag. A
 * stray argument is counted, not quoted: it is often a secret whose option
 * was forgotten (--name n s3cret, --worker rig s3cret).
 */
export function parseCommandLine<T extends OptionSpec>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      throw new UsageError((error as Error).message.replace(/\. To specify a positional.*$/s, ''));
    }
    const { tokens } = parseArgs({ args: argv, options, allowPositionals: true, strict: true, tokens: true });
    const stray = tokens.find((token) => token.kind === 'positional')!;
    throw new UsageError(`argument ${stray.index + 1} is neither an option nor an option's value (it is not shown: it may be a secret)`);
  }
}

/**
 * NAME and VALUE of an option written NAME<separator>VALUE (--worker
 * NAME:SECRET, --env K=V), whose value may be a secret: an error names the
 * option, never what could be the secret.
 */
export function splitOption(spec: string, flag: string, form: string, separator: string): [string, string] {
  const at = spec.indexOf(separator);
  if (at <= 0) {
    const name = form.slice(0, form.indexOf(separator) + 1);
    throw new UsageError(`${flag} takes ${form}; a ${flag} value lacks the '${name}' part (it is not shown: it may be a secret)`);
  }
  return [spec.slice(0, at), spec.slice(at + 1)];
}

/**
 * Runs a program's main: a known failure prints one line and exits non-zero;
 * the stack trace only with --verbose.
 */
export function runMain(program: string, main: () => Promise<number | void>, verbose: boolean): void {
  main().then(
    (code) => {
      if (typeof code === 'number') process.exitCode = code;
    },
    (error: Error) => {
      const known = error instanceof UsageError || error instanceof TetherError;
      process.stderr.write(`${program}: ${printable(error.message)}\n`);
      if (verbose) process.stderr.write(`${printableStack(error)}\n`);
      else if (!known) process.stderr.write(`${program}: run with --verbose for details\n`);
      process.exitCode = error instanceof UsageError ? 2 : 1;
    },
  );
}

/** Prints a timestamped log line to stderr; peer text in it is escaped, so it stays one line. */
export function logLine(program: string): (line: string) => void {
  return (line) => process.stderr.write(`${new Date().toISOString()} ${program}: ${printable(line)}\n`);
}

/** Handles --help and --version; returns true when one was printed. */
export function printedInfo(program: string, help: string, values: { help?: boolean; version?: boolean }): boolean {
  if (values.help) process.stdout.write(help);
  else if (values.version) process.stdout.write(`${program} ${VERSION}\n`);
  return Boolean(values.help || values.version);
}

/** An integer option from min to max (`fallback` when absent); else a UsageError naming the range. */
export function positiveInt<F extends number | undefined>(value: string | undefined, flag: string, fallback: F, min = 1, max = Infinity): number | F {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`${flag} must be an integer ${max === Infinity ? `of at least ${min}` : `from ${min} to ${max}`}`);
  }
  return n;
}
