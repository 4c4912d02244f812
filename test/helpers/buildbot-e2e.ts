/**
 * Tether's end-to-end Buildbot build (test/buildbot/e2e-steps.py): the files
 * it needs, the master options that load it, running it, and what its results
 * must be. Used by the reference test (plain buildbot-worker) and by tests
 * that run the same build through Tether, so that both can be held to the
 * same expectations and compared with normaliseBuild().
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Test } from 'tap';
import {
  BUILDBOT_TEST_DIR, type BuildbotMaster, type BuildResult, type ComparisonRecord, type MasterOptions, type WorkerSpec, normaliseBuild,
} from './buildbot';
import { alive } from './processes';
import { makeTempDir, waitFor } from './support';

export const E2E_STEPS_PY = path.join(BUILDBOT_TEST_DIR, 'e2e-steps.py');

/** Constants mirrored from e2e-steps.py. */
export const E2E = {
  utf8Text: 'grüße ✓ 日本',
  stdinText: 'first line\nzweite Zeile ✓\nno newline at the end',
  bigLines: 65536,
  bigLine: (n: number) => `line ${String(n).padStart(7, '0')} abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN`,
  stringText: 'string download ✓\nsecond line\n',
  stamp: new Date(2001, 1, 3, 4, 5, 6), // local time, as `touch -d` reads it
  downloadSize: 1024 * 1024 + 123,
} as const;

export interface E2EFixture {
  /** Temp root holding everything below. */
  root: string;
  repoUrl: string;
  /** The commit the repo's HEAD points at (deterministic: fixed dates and names). */
  headRevision: string;
  downloadSrc: string;
  downloadBytes: Buffer;
  downloadSha256: string;
  uploadDir: string;
  interruptPidfile: string;
  /** TEST['e2e'] in master.cfg. */
  vars: Record<string, string>;
}

function git(args: string[], cwd: string): Promise<string> {
  const env = {
    ...process.env,
    GIT_AUTHOR_NAME: 'Tether Test', GIT_AUTHOR_EMAIL: 'tether@example.invalid',
    GIT_COMMITTER_NAME: 'Tether Test', GIT_COMMITTER_EMAIL: 'tether@example.invalid',
    GIT_AUTHOR_DATE: '2001-02-03T04:05:06Z', GIT_COMMITTER_DATE: '2001-02-03T04:05:06Z',
    GIT_CONFIG_NOSYSTEM: '1', HOME: cwd,
  };
  return new Promise((resolve, reject) => {
    execFile('git', args, { cwd, env }, (err, stdout, stderr) => {
      if (err) reject(new Error(`git ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(String(stdout));
    });
  });
}

/** Deterministic pseudo-random bytes (every byte value occurs). */
export function patternBytes(size: number, seed = 'tether'): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(seed).digest();
  for (let off = 0; off < size; off += block.length) {
    block.copy(out, off, 0, Math.min(block.length, size - off));
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

/** Creates the git repo, the download source and the upload directory under a temp root. */
export async function prepareE2E(root?: string): Promise<E2EFixture> {
  root = root ?? await makeTempDir('tether-e2e-');
  const src = path.join(root, 'repo-src');
  await fsp.mkdir(src, { recursive: true });
  await git(['init', '-q', '-b', 'main', '.'], src);
  await fsp.writeFile(path.join(src, 'hello.txt'), 'hello from the e2e repo ✓\n');
  await fsp.writeFile(path.join(src, 'README'), 'Tether e2e test repository\n');
  await git(['add', 'hello.txt', 'README'], src);
  await git(['commit', '-q', '-m', 'e2e fixture'], src);
  await git(['clone', '-q', '--bare', src, path.join(root, 'repo.git')], root);
  const headRevision = (await git(['rev-parse', 'HEAD'], src)).trim();

  const downloadBytes = patternBytes(E2E.downloadSize);
  const downloadSrc = path.join(root, 'download.bin');
  await fsp.writeFile(downloadSrc, downloadBytes);
  const uploadDir = path.join(root, 'uploads');
  await fsp.mkdir(uploadDir);
  const interruptPidfile = path.join(root, 'interrupt.pid');
  const repoUrl = `file://${path.join(root, 'repo.git')}`;
  return {
    root, repoUrl, headRevision, downloadSrc, downloadBytes,
    downloadSha256: createHash('sha256').update(downloadBytes).digest('hex'),
    uploadDir, interruptPidfile,
    vars: {
      repo_url: repoUrl, download_src: downloadSrc, string_text: E2E.stringText,
      upload_dir: uploadDir, interrupt_pidfile: interruptPidfile,
    },
  };
}

/** Master options with the builders 'e2e' and 'interrupt' for the given workers. */
export function e2eMasterOptions(fx: E2EFixture, workers: WorkerSpec[], extra: Partial<MasterOptions> = {}): MasterOptions {
  return {
    workers,
    fixMsgpack: true,
    ...extra,
    vars: { ...(extra.vars ?? {}), e2e: fx.vars },
    include: [E2E_STEPS_PY, ...(extra.include ?? [])],
    builders: [
      { name: 'e2e', factory: "tether_e2e_factory(TEST['e2e'])" },
      { name: 'interrupt', factory: "tether_interrupt_factory(TEST['e2e'])" },
      ...(extra.builders ?? []),
    ],
  };
}

export interface E2EResults {
  main: BuildResult;
  interrupt: BuildResult;
  /** pid of the interrupted command (from its pid file). */
  interruptPid: number;
  /** Whether that process was gone after the build was stopped. */
  interruptProcessGone: boolean;
}

/** Runs the main e2e build, then the interrupt build (stopped once its command runs). */
export async function runE2E(master: BuildbotMaster, fx: E2EFixture): Promise<E2EResults> {
  const main = await master.runBuild('e2e', { timeoutMs: 300_000 });

  await fsp.rm(fx.interruptPidfile, { force: true });
  const brid = await master.forceBuild('interrupt');
  const buildid = await master.waitForBuildOfRequest(brid);
  const step = await master.waitForStep(buildid, 'sleeper');
  await master.waitForLogText(step.stepid, 'started');
  const interruptPid = Number((await fsp.readFile(fx.interruptPidfile, 'utf8')).trim());
  await master.stopBuild(buildid, 'tether e2e stop');
  await master.waitForBuild(buildid, { timeoutMs: 60_000 });
  let interruptProcessGone = false;
  try {
    await waitFor('the interrupted command to die', () => !alive(interruptPid), { timeoutMs: 10_000 });
    interruptProcessGone = true;
  } catch {
    interruptProcessGone = false;
  }
  const interrupt = await master.getBuildResult(buildid);
  return { main, interrupt, interruptPid, interruptProcessGone };
}

/** The normalised records of both builds (worker dir → <WORKER>, fixture root → <ROOT>). */
export function e2eRecords(res: E2EResults, fx: E2EFixture, workerDir: string): { main: ComparisonRecord; interrupt: ComparisonRecord } {
  const replace: Array<[string | RegExp, string]> = [
    [workerDir, '<WORKER>'], [fx.root, '<ROOT>'],
    // git's progress lines depend on timing: drop them
    [/^(remote: )?(Enumerating|Counting|Compressing|Receiving|Resolving|Unpacking|Total) .*\n/gm, ''],
  ];
  return {
    main: normaliseBuild(res.main, { replace }),
    interrupt: normaliseBuild(res.interrupt, { replace }),
  };
}

/** Files the e2e uploads put on the master, relative to uploadDir, with their contents. */
export function readUploads(fx: E2EFixture): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  const walk = (dir: string, rel: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out[`${r}/`] = Buffer.alloc(0);
        walk(p, r);
      } else {
        out[r] = fs.readFileSync(p);
      }
    }
  };
  walk(fx.uploadDir, '');
  return out;
}

/** The steps of the main build, in order, with their expected results. */
export const E2E_MAIN_STEPS: Array<[string, string]> = [
  ['worker_preparation', 'success'],
  ['git', 'success'],
  ['checkout', 'success'],
  ['stdout-stderr', 'success'],
  ['utf8', 'success'],
  ['stdin', 'success'],
  ['no-stderr', 'success'],
  ['decode-rc', 'warnings'],
  ['exit-1', 'failure'],
  ['no-newline', 'success'],
  ['timeout', 'failure'],
  ['max-time', 'failure'],
  ['logfiles', 'success'],
  ['big-log', 'success'],
  ['file-download', 'success'],
  ['check-download', 'success'],
  ['string-download', 'success'],
  ['check-string-download', 'success'],
  ['mkdir', 'success'],
  ['fill-dir', 'success'],
  ['cpdir', 'success'],
  ['file-exists', 'success'],
  ['rmdir', 'success'],
  ['file-missing', 'failure'],
  ['check-dirs', 'success'],
  ['set-property', 'success'],
  ['set-property-rev', 'success'],
  ['make-uploads', 'success'],
  ['file-upload', 'success'],
  ['file-upload-big', 'success'],
  ['file-upload-keepstamp', 'success'],
  ['directory-upload', 'success'],
  ['multiple-file-upload', 'success'],
  ['done', 'success'],
];

/** The 4 MiB the big-log step prints. */
export function e2eBigLog(): string {
  const parts: string[] = [];
  for (let i = 1; i <= E2E.bigLines; i++) parts.push(E2E.bigLine(i) + '\n');
  return parts.join('');
}

function elapsed(header: string | undefined): number {
  const m = /elapsedTime=([0-9.]+)/.exec(header ?? '');
  return m ? Number(m[1]) : NaN;
}

/**
 * Asserts everything the e2e builds must show, whatever worker ran them
 * (buildbot-worker or Tether). Upload checks read fx.uploadDir on this machine.
 */
export function checkE2E(t: Test, fx: E2EFixture, res: E2EResults): void {
  const { main } = res;
  t.equal(main.result, 'failure', 'main build: failure (it has failing steps on purpose)');
  t.same(main.steps.map((s) => [s.name, s.result]), E2E_MAIN_STEPS, 'main build: steps and their results');

  const io = (name: string, log = 'stdio') => main.step(name)?.log(log)?.stdio;
  const header = (name: string) => io(name)?.header ?? '';

  t.equal(main.properties.got_revision?.value, fx.headRevision, 'git: got_revision');
  t.match(io('git')?.stdout, fx.headRevision, 'git: rev-parse output');
  t.equal(io('checkout')?.stdout, 'hello from the e2e repo ✓\n', 'checkout has the repo file');

  t.equal(io('stdout-stderr')?.stdout, 'out1\nout2\n', 'stdout kept apart');
  t.equal(io('stdout-stderr')?.stderr, 'err1\nerr2\n', 'stderr kept apart');
  t.equal(io('utf8')?.stdout, `${E2E.utf8Text}\n`, 'non-ASCII stdout');
  t.equal(io('utf8')?.stderr, `stderr: ${E2E.utf8Text}\n`, 'non-ASCII stderr');
  t.equal(io('stdin')?.stdout, `${E2E.stdinText}\n[end of stdin]\n`, 'initialStdin reached the command, then EOF');
  t.equal(io('no-stderr')?.stdout, 'visible\n', 'want_stderr=False: stdout kept');
  t.equal(io('no-stderr')?.stderr, '', 'want_stderr=False: stderr dropped');
  t.match(header('decode-rc'), /program finished with exit code 3\n/, 'decodeRC: rc 3');
  t.equal(main.step('decode-rc')?.state_string, "'echo exiting ...' (warnings)", 'decodeRC: 3 -> WARNINGS');
  t.match(header('exit-1'), /program finished with exit code 1\n/, 'exit 1');
  t.equal(io('no-newline')?.stdout, 'partial line without newline\n', 'a last line without newline is completed');

  t.equal(io('timeout')?.stdout, 'before the silence\n', 'timeout: output before the kill only');
  t.match(header('timeout'), /command timed out: 2 seconds without output running .*, attempting to kill\n/, 'timeout: message');
  t.match(header('timeout'), /process killed by signal 9\nprogram finished with exit code -1\n/, 'timeout: killed');
  const te = elapsed(header('timeout'));
  t.ok(te >= 2 && te < 15, `timeout: killed after ~2 s (${te})`);
  t.equal(io('max-time')?.stdout, 'tick\n', 'maxTime: output before the kill only');
  t.match(header('max-time'), /command timed out: 3 seconds elapsed running .*, attempting to kill\n/, 'maxTime: message');
  t.match(header('max-time'), /process killed by signal 9\nprogram finished with exit code -1\n/, 'maxTime: killed');
  const me = elapsed(header('max-time'));
  t.ok(me >= 3 && me < 15, `maxTime: killed after ~3 s (${me})`);

  t.equal(io('logfiles')?.stdout, 'wrote app.log\n', 'logfiles: stdio');
  t.equal(io('logfiles', 'app')?.stdout, 'entry 1 ✓\nentry 2 ✓\nentry 3 ✓\n', 'logfiles: the watched file, as log "app"');

  const big = io('big-log')?.stdout ?? '';
  t.equal(Buffer.byteLength(big), E2E.bigLines * 64, 'big log: 4 MiB');
  t.ok(big === e2eBigLog(), 'big log: every line, in order');

  t.equal(io('check-download')?.stdout, `${fx.downloadSha256}  downloaded.bin\n${E2E.downloadSize}\n640\n`,
    'FileDownload: byte-exact, mode 0640');
  t.equal(io('check-string-download')?.stdout, E2E.stringText, 'StringDownload: exact, parent dirs created');
  t.equal(main.step('file-missing')?.state_string, 'File not found. (failure)', 'FileExists on a removed file');
  t.equal(io('check-dirs')?.stdout, 'content\n', 'MakeDirectory/CopyDirectory/RemoveDirectory');

  t.equal(main.properties.from_command?.value, 'value ✓ with spaces', 'SetPropertyFromCommand');
  t.equal(main.properties.from_command?.source, 'SetPropertyFromCommand Step');
  t.equal(main.properties.head_revision?.value, fx.headRevision, 'SetPropertyFromCommand (git rev-parse)');

  const up = readUploads(fx);
  t.ok(up['roundtrip.bin']?.equals(fx.downloadBytes), 'FileUpload: byte-exact round trip of the download');
  const numbers = Array.from({ length: 200000 }, (_, i) => `${i + 1}\n`).join('');
  t.ok(up['numbers.txt']?.equals(Buffer.from(numbers)), 'FileUpload: 1.2 MB text, byte-exact');
  t.equal(up['stamped.txt']?.toString(), 'stamped\n', 'FileUpload keepstamp: content');
  const mtime = fs.statSync(path.join(fx.uploadDir, 'stamped.txt')).mtime.getTime();
  t.equal(mtime, E2E.stamp.getTime(), 'FileUpload keepstamp: mtime kept');
  const tree = (prefix: string) => Object.fromEntries(Object.entries(up)
    .filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v.toString()]));
  const expectedTree = { '': '', 'a/': '', 'a/b/': '', 'a/b/x.txt': 'x\n', 'empty/': '', 'y.txt': 'grüße\n' };
  t.same(tree('tree/'), expectedTree, 'DirectoryUpload: the tree, empty dir included');
  t.same(tree('multi/'), {
    '': '', 'm1.txt': 'm1\n', 'm2.txt': 'm2\n',
    ...Object.fromEntries(Object.entries(expectedTree).map(([k, v]) => [`tree/${k}`, v])),
  }, 'MultipleFileUpload: files and a directory');
  t.equal(io('done')?.stdout, 'end of build\n', 'the build ran to its end');

  const { interrupt } = res;
  t.equal(interrupt.result, 'cancelled', 'interrupt build: cancelled');
  t.same(interrupt.steps.map((s) => [s.name, s.result]), [['worker_preparation', 'success'], ['sleeper', 'cancelled']],
    'interrupt build: the interrupted step is the last');
  const sio = interrupt.step('sleeper')?.log()?.stdio;
  t.equal(sio?.stdout, 'started\n', 'interrupt: output before the interruption');
  t.match(sio?.header, /\ncommand interrupted, attempting to kill\nprocess killed by signal 9\nprogram finished with exit code -1\n/,
    'interrupt: killed');
  t.equal(interrupt.step('sleeper')?.log('cancelled')?.text, 'tether e2e stop\n', 'interrupt: reason logged');
  t.ok(res.interruptProcessGone, `interrupt: the command (pid ${res.interruptPid}) is gone`);
}
