/**
 * Tether's benchmarks: `npm run bench` (everything, several minutes), or
 * `npm run bench -- --quick` (small sizes, few repetitions). Writes
 * bench/results.json and prints tables and the goals.
 *
 *   --quick                 small sizes and few repetitions
 *   --only=a,b              sections: buildbot, protocol, memory, scale, serial, noise, hostile
 *                           (none: only the profiles asked for with --profile=)
 *   --skip-buildbot         everything but the Buildbot comparison
 *   --out=FILE              where the results go (default bench/results.json, and
 *                           the page docs/performance.md; with --out, the page
 *                           goes beside FILE as FILE.md)
 *   --from=FILE             only print the tables of an earlier results file again
 *   --profile[=a,b]         then profile the missed goals (or the named scenarios:
 *                           throughput, roundtrip, memory, serial) and print what they show;
 *                           a full run does this for missed goals unless --no-profile
 *
 * bench/bench.js bundles this file (esbuild) into bench/.build/ and runs it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { type BuildbotResults, runBuildbot } from './buildbot';
import { type Goal, evaluateGoals } from './goals';
import { type BenchOptions, round, table } from './lib';
import { type MemoryResults, runMemory } from './memory';
import { type ProfileReport, printProfile, profileScenario } from './profile';
import { type ProtocolResults, runProtocol } from './protocol';
import { PERFORMANCE_PAGE, performancePage } from './performance-page';
import { report } from './report';
import { type ScaleResults, runScale } from './scale';
import { type HostileRow, runHostile } from './hostile';
import { type NoiseResults, runNoise } from './noise';
import { type SerialResults, runSerial } from './serial';
import { REPO_ROOT } from '../test/helpers/support';

/**
 * In the order they run. The protocol section goes first: its hub runs in this
 * process, and after the Buildbot section it spent 5.1-5.2 ms of CPU per MB
 * against 3.3 in a fresh one (two runs each), which is the hub a user has.
 */
export const SECTIONS = ['protocol', 'buildbot', 'memory', 'scale', 'serial', 'noise', 'hostile'] as const;
export type Section = (typeof SECTIONS)[number];

export interface Results {
  meta: {
    date: string;
    command: string;
    quick: boolean;
    sections: Section[];
    durationS: number;
    machine: { cores: number; cpu: string; memoryGB: number; node: string; kernel: string; loadBefore: number[]; loadAfter: number[] };
  };
  buildbot?: BuildbotResults;
  protocol?: ProtocolResults;
  memory?: MemoryResults;
  scale?: ScaleResults;
  serial?: SerialResults;
  noise?: NoiseResults;
  hostile?: HostileRow[];
  /** Sections that failed, with the error. */
  errors: Record<string, string>;
  goals: Goal[];
  profiles?: ProfileReport[];
}

interface Args {
  quick: boolean;
  sections: Section[];
  out: string;
  /** null: none; []: the missed goals'; undefined: the missed goals' in a full run. */
  profile: string[] | null | undefined;
}

const DEFAULT_OUT = path.join(REPO_ROOT, 'bench', 'results.json');

function parseArgs(argv: string[]): Args {
  const args: Args = { quick: false, sections: [...SECTIONS], out: DEFAULT_OUT, profile: undefined };
  for (const arg of argv) {
    const [key, value] = arg.split(/=(.*)/s, 2);
    if (key === '--quick') args.quick = true;
    else if (key === '--skip-buildbot' || key === '--no-buildbot') args.sections = args.sections.filter((s) => s !== 'buildbot');
    else if (key === '--only' && value) {
      const wanted = value === 'none' ? [] : value.split(',');
      for (const w of wanted) if (!(SECTIONS as readonly string[]).includes(w)) throw new Error(`unknown section '${w}' (${SECTIONS.join(', ')})`);
      args.sections = SECTIONS.filter((s) => wanted.includes(s));
    } else if (key === '--out' && value) args.out = path.resolve(value);
    else if (key === '--profile') args.profile = value ? value.split(',') : [];
    else if (key === '--no-profile') args.profile = null;
    else if (key === '-h' || key === '--help') {
      process.stdout.write(`usage: npm run bench -- [--quick] [--only=${SECTIONS.join(',')}|none] [--skip-buildbot] [--out=FILE] [--from=FILE] [--profile[=throughput,roundtrip,memory,serial]] [--no-profile]\n`);
      process.exit(0);
    } else throw new Error(`unknown argument '${arg}' (try --help)`);
  }
  return args;
}

function machine(): Results['meta']['machine'] {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  return {
    cores: os.cpus().length,
    cpu: model.trim(),
    memoryGB: round(os.totalmem() / 1e9, 1),
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    loadBefore: os.loadavg().map((x) => round(x, 2)),
    loadAfter: [],
  };
}

async function main(): Promise<number> {
  const from = process.argv.slice(2).find((a) => a.startsWith('--from='));
  if (from) return reprint(path.resolve(from.slice('--from='.length)));
  const args = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const log = (line: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
  const opts: BenchOptions = { quick: args.quick, log };
  const results: Results = {
    meta: {
      date: new Date().toISOString(),
      command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
      quick: args.quick,
      sections: args.sections,
      durationS: 0,
      machine: machine(),
    },
    errors: {},
    goals: [],
  };
  const runners: Record<Section, () => Promise<unknown>> = {
    buildbot: () => runBuildbot(opts),
    protocol: () => runProtocol(opts),
    memory: () => runMemory(opts),
    scale: () => runScale(opts),
    serial: () => runSerial(opts),
    noise: () => runNoise(opts),
    hostile: () => runHostile(opts),
  };
  for (const section of args.sections) {
    log(`--- ${section}${args.quick ? ' (quick)' : ''}`);
    try {
      (results as unknown as Record<string, unknown>)[section] = await runners[section]();
    } catch (error) {
      results.errors[section] = (error as Error).stack ?? String(error);
      log(`${section} FAILED: ${(error as Error).message}`);
    }
  }
  results.goals = evaluateGoals(results);
  const profile = args.profile === undefined ? (args.quick ? null : []) : args.profile;
  const wantProfiles = profile === null ? [] : profile.length > 0 ? profile : missedProfiles(results.goals);
  if (wantProfiles.length > 0) {
    results.profiles = [];
    for (const scenario of wantProfiles) {
      log(`--- profile ${scenario}`);
      try {
        results.profiles.push(await profileScenario(scenario, args.quick));
      } catch (error) {
        results.errors[`profile ${scenario}`] = (error as Error).stack ?? String(error);
        log(`profile ${scenario} FAILED: ${(error as Error).message}`);
      }
    }
  }
  results.meta.durationS = Math.round((performance.now() - started) / 1000);
  results.meta.machine.loadAfter = os.loadavg().map((x) => round(x, 2));
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(args.out, `${JSON.stringify(results, null, 2)}\n`);
  const section = writeSection(results, args.out);
  process.stdout.write(report(results));
  process.stdout.write(`\n## Goals${args.quick ? ' (quick run: smaller sizes than the goals name)' : ''}\n\n`);
  process.stdout.write(
    `${table(['goal', 'target', 'measured', 'met'], results.goals.map((g) => [g.goal, g.target, g.measured, g.met === null ? 'n/a' : g.met ? 'yes' : 'NO']))}\n`,
  );
  for (const p of results.profiles ?? []) {
    process.stdout.write('\n');
    printProfile(p, (line) => process.stdout.write(`${line}\n`));
  }
  process.stdout.write(`\nresults: ${path.relative(process.cwd(), args.out) || args.out}; page: ${path.relative(process.cwd(), section)}\n`);
  const failed = Object.keys(results.errors);
  if (failed.length > 0) {
    process.stderr.write(`\nsections that failed: ${failed.join(', ')}\n`);
    for (const [section, error] of Object.entries(results.errors)) process.stderr.write(`--- ${section}\n${error}\n`);
    return 1;
  }
  return 0;
}

/**
 * Writes the run's page: docs/performance.md for the default results file,
 * else FILE.md beside the results (a test's or a trial's run leaves the
 * committed page alone). Returns its path.
 */
function writeSection(results: Results, out: string): string {
  const file = out === DEFAULT_OUT ? PERFORMANCE_PAGE : `${out.replace(/\.json$/, '')}.md`;
  fs.writeFileSync(file, performancePage(results, SECTIONS));
  return file;
}

/** --from=FILE: prints the tables and goals of an earlier run again and rewrites its page. */
function reprint(file: string): number {
  const results = JSON.parse(fs.readFileSync(file, 'utf8')) as Results;
  results.goals = evaluateGoals(results);
  process.stdout.write(report(results));
  process.stdout.write(`\n## Goals\n\n${table(['goal', 'target', 'measured', 'met'], results.goals.map((g) => [g.goal, g.target, g.measured, g.met === null ? 'n/a' : g.met ? 'yes' : 'NO']))}\n`);
  for (const p of results.profiles ?? []) {
    process.stdout.write('\n');
    printProfile(p, (line) => process.stdout.write(`${line}\n`));
  }
  process.stdout.write(`\npage: ${path.relative(process.cwd(), writeSection(results, file))}\n`);
  return 0;
}

/** The profile scenarios behind missed goals. */
function missedProfiles(goals: Goal[]): string[] {
  const out = new Set<string>();
  for (const g of goals) if (g.met === false && g.profile) out.add(g.profile);
  return [...out];
}

main().then(
  (code) => process.exit(code),
  (error: Error) => {
    process.stderr.write(`bench: ${error.stack ?? error.message}\n`);
    process.exit(2);
  },
);
