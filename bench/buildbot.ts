/**
 * Tether against buildbot-worker through a real Buildbot 3.7 master. One
 * master has two workers: 'board' (tether-agent → tether-master, child
 * processes) and 'ref' (buildbot-worker, msgpack_experimental_v7), each with
 * its own copy of every builder; builds alternate A B A B and the figures
 * are medians over the repetitions, ratios the median of each pair's ratio.
 *
 * Each worker reaches the master through a counting TCP relay: the agent ↔
 * tether-master link for Tether (what crosses to the board), the
 * buildbot-worker ↔ master msgpack link for Buildbot. The bytes of a build
 * are what both relays carried, both directions, while it ran. A second
 * relay on each side, in front of the master's msgpack port, counts what
 * Buildbot itself receives (bytes and WebSocket messages): from tether-master,
 * and from buildbot-worker. Both sides' bytes thus cross two relays of this
 * process, which costs both the same.
 *
 * Times are wall times from forcing the build to seeing it complete (polled
 * every 50 ms), so each includes Buildbot's own cost of a build; "net" less
 * the median of an empty build (one `true` step) of the same worker.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  type BuildbotMaster, type BuildbotWorker, type BuilderSpec, checkBuildbotInstalled, createMaster, createWorker, pyString,
} from '../test/helpers/buildbot';
import { E2E_MAIN_STEPS, E2E_STEPS_PY, prepareE2E } from '../test/helpers/buildbot-e2e';
import { type TetherProcess, tetherAgent, tetherMaster } from '../test/helpers/tether-procs';
import { TetherWireTap, type WireSummary } from './wiretap';
import {
  type BenchOptions, CountingRelay, MB, alternate, cpuMsOf, RssSampler, median, round, settledMemory, since, textProducer,
} from './lib';
import { freePort, makeTempDir, sleep, withTimeout } from '../test/helpers/support';

const TETHER = 'board';
const REF = 'ref';
type WorkerName = typeof TETHER | typeof REF;

export interface ScenarioResult {
  name: string;
  description: string;
  reps: number;
  tetherS: number;
  buildbotS: number;
  /** Tether / buildbot-worker: the median of each pair's ratio. */
  ratio: number;
  /** Less each worker's empty-build median. */
  tetherNetS: number;
  buildbotNetS: number;
  netRatio: number;
  tetherBytes: number;
  buildbotBytes: number;
  byteRatio: number;
  /** In pair order: A B, B A, A B ... (bench/lib.ts alternate). */
  tetherRuns: number[];
  buildbotRuns: number[];
  /** The first build of each, left out of the figures above: it pays for V8 compiling Tether's hot path. */
  tetherFirstS: number;
  buildbotFirstS: number;
  /** Median CPU ms per process: the master, the worker (tether-agent or buildbot-worker), tether-master (Tether only). */
  tetherCpu: BuildCpu;
  buildbotCpu: BuildCpu;
  /** The master's msgpack port (medians): from tether-master for Tether, from buildbot-worker for Buildbot. */
  tetherMasterLink: MasterLink;
  buildbotMasterLink: MasterLink;
  /** MB of log or file the build moves (null: none to speak of). */
  payloadMB: number | null;
  /** The master's median CPU seconds per payload MB: what Buildbot spends on the same bytes from each worker. */
  tetherMasterCpuSPerMB: number | null;
  buildbotMasterCpuSPerMB: number | null;
}

export interface BuildbotMemory {
  /** VmRSS MB of the worker process (buildbot-worker's twistd; tether-agent), idle. */
  tetherIdleMB: number;
  buildbotIdleMB: number;
  streamedBytes: number;
  tetherStreamingMB: number;
  buildbotStreamingMB: number;
  /** The same, private memory only (USS). */
  tetherIdleUssMB: number;
  buildbotIdleUssMB: number;
  tetherStreamingUssMB: number;
  buildbotStreamingUssMB: number;
  /** tether-master, the extra process on the master's side: idle and while its agent streamed. */
  bridgeIdleMB: number;
  bridgeStreamingMB: number;
}

export type BuildbotResults =
  | {
      available: true;
      scenarios: ScenarioResult[];
      /** The e2e build (test/buildbot/e2e-steps.py): the wire bytes of a whole build of ordinary steps. */
      e2e: {
        tetherBytes: number;
        buildbotBytes: number;
        byteRatio: number;
        tetherS: number;
        buildbotS: number;
        steps: number;
        /** Tether's link, message by message (bench/wiretap.ts). */
        tetherWire: WireSummary;
        /** Bytes that are not command output or file data: Tether's, and msgpack's (its total less the same payload). */
        tetherOverhead: number;
        buildbotOverhead: number;
        overheadRatio: number;
        /** Tether's bytes with `--compress always` (the same frames through the session's compressor), and that against msgpack. */
        tetherWithDeflate: number;
        byteRatioWithDeflate: number;
      };
      memory: BuildbotMemory;
    }
  | { available: false; reason: string };

interface Rig {
  master: BuildbotMaster;
  bridge: TetherProcess;
  agent: TetherProcess & { basedir: string };
  worker: BuildbotWorker;
  relays: Record<WorkerName, CountingRelay>;
  /** In front of the master's msgpack port: from tether-master, and from the buildbot-worker link relay. */
  masterRelays: Record<WorkerName, CountingRelay>;
  dirs: string[];
}

/** Bytes and WebSocket messages (both ways) on the master's msgpack port during a build. */
export interface MasterLink {
  bytes: number;
  messages: number;
  /** Messages and bytes the worker side sent: its updates (all but a few of them), answers and 'complete'. */
  workerMessages: number;
  workerBytes: number;
}

/** CPU ms each process used: the master, and the worker side (tether-agent and tether-master, or buildbot-worker). */
export interface BuildCpu {
  master: number;
  worker: number;
  bridge: number;
}

function cpuNow(rig: Rig, w: WorkerName): BuildCpu {
  return {
    master: cpuMsOf(rig.master.pid!),
    worker: cpuMsOf(w === TETHER ? rig.agent.pid! : rig.worker.pid!),
    bridge: w === TETHER ? cpuMsOf(rig.bridge.pid!) : 0,
  };
}

/** Polls the build until it is complete; resolves with its result code, wall time, relay bytes and CPU time. */
async function timeBuild(
  rig: Rig,
  builder: string,
  timeoutMs = 900_000,
): Promise<{ ms: number; results: number | null; buildid: number; bytes: number; cpu: BuildCpu; master: MasterLink }> {
  const w: WorkerName = builder.endsWith(`-${TETHER}`) ? TETHER : REF;
  const relay = rig.relays[w];
  relay.reset();
  // What reaches Buildbot's msgpack port: from tether-master, or from buildbot-worker itself.
  const masterRelay = rig.masterRelays[w];
  masterRelay.reset();
  const cpu0 = cpuNow(rig, w);
  const start = performance.now();
  const brid = await rig.master.forceBuild(builder);
  const deadline = start + timeoutMs;
  let buildid: number | undefined;
  while (buildid === undefined) {
    const r = await rig.master.get<{ builds: Array<{ buildid: number }> }>(`/builds?buildrequestid=${brid}`);
    if (r.builds.length > 0) buildid = r.builds[r.builds.length - 1].buildid;
    else if (performance.now() > deadline) throw new Error(`${builder}: no build for request ${brid}`);
    else await sleep(50);
  }
  for (;;) {
    // The build alone, without its properties: the polls should cost the master as little as they can.
    const b = (await rig.master.get<{ builds: Array<{ complete: boolean; results: number | null }> }>(`/builds/${buildid}`)).builds[0];
    if (!b) throw new Error(`${builder}: build ${buildid} is not in the REST API`);
    if (b.complete) {
      const ms = since(start);
      const cpu1 = cpuNow(rig, w);
      const cpu = { master: cpu1.master - cpu0.master, worker: cpu1.worker - cpu0.worker, bridge: cpu1.bridge - cpu0.bridge };
      const master = { bytes: masterRelay.total, messages: masterRelay.wsFrames, workerMessages: masterRelay.wsUp.frames, workerBytes: masterRelay.up };
      return { ms, results: b.results, buildid, bytes: relay.total, cpu, master };
    }
    if (performance.now() > deadline) throw new Error(`${builder}: build ${buildid} did not finish within ${timeoutMs / 1000} s`);
    await sleep(50);
  }
}

interface Scenario {
  name: string;
  description: string;
  /** MB of log or file the build moves, for the master's CPU per MB. */
  payloadMB?: number;
  builder: (w: WorkerName) => Omit<BuilderSpec, 'name' | 'workernames'>;
  /** Checks a finished build (its result code and anything it left). */
  check: (rig: Rig, w: WorkerName, build: { results: number | null; buildid: number }) => Promise<void>;
}

async function stepLog(rig: Rig, buildid: number, step: string): Promise<{ num_lines: number }> {
  const steps = await rig.master.steps(buildid);
  const s = steps.find((x) => x.name === step);
  if (!s) throw new Error(`build ${buildid} has no step ${step}`);
  const logs = await rig.master.logs(s.stepid);
  const l = logs.find((x) => x.name === 'stdio');
  if (!l) throw new Error(`step ${step} has no stdio log`);
  return l;
}

function sha256File(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

const success = (what: string, results: number | null) => {
  if (results !== 0) throw new Error(`${what}: build result ${String(results)}, not success`);
};

export async function runBuildbot(opts: BenchOptions): Promise<BuildbotResults> {
  try {
    checkBuildbotInstalled();
  } catch (error) {
    opts.log(`buildbot: not available (${(error as Error).message})`);
    return { available: false, reason: (error as Error).message };
  }
  const q = opts.quick;
  const steps = q ? 20 : 200;
  const logBytes = (q ? 5 : 50) * MB;
  const fileBytes = (q ? 5 : 50) * MB;
  const streamBytes = (q ? 10 : 100) * MB;
  const reps = q ? 1 : 3;

  const root = await makeTempDir('tether-bench-bb-');
  const dirs = [root];
  const uploadSrc = path.join(root, 'upload-src.bin');
  const downloadSrc = path.join(root, 'download-src.bin');
  fs.writeFileSync(uploadSrc, randomBytes(fileBytes));
  fs.writeFileSync(downloadSrc, randomBytes(fileBytes));
  const uploadHash = sha256File(uploadSrc);
  const downloadHash = sha256File(downloadSrc);
  const dest = (what: string, w: WorkerName) => path.join(root, `${what}-${w}.bin`);
  const logLines = Math.ceil(logBytes / 64);

  const scenarios: Scenario[] = [
    {
      name: 'empty build',
      description: 'one `true` step (the per-build cost)',
      builder: () => ({ steps: ["steps.ShellCommand(name='true', command=['true'])"] }),
      check: async (_rig, w, b) => success(`empty build on ${w}`, b.results),
    },
    {
      name: `${steps} trivial steps`,
      description: `a build of ${steps} ShellCommand(['true']) steps`,
      builder: () => ({ factory: `util.BuildFactory([steps.ShellCommand(name='t%d' % i, command=['true']) for i in range(${steps})])` }),
      check: async (_rig, w, b) => success(`steps on ${w}`, b.results),
    },
    {
      name: `${logBytes / MB} MB log`,
      description: `a step printing ${logBytes / MB} MB of text (64-byte lines)`,
      payloadMB: logBytes / MB,
      builder: () => ({ steps: [`steps.ShellCommand(name='log', command=${pyString(textProducer(logBytes))})`] }),
      check: async (rig, w, b) => {
        success(`log on ${w}`, b.results);
        const l = await stepLog(rig, b.buildid, 'log');
        // num_lines counts the header lines (command, directory, exit code, elapsedTime) too
        if (l.num_lines < logLines || l.num_lines > logLines + 200) throw new Error(`log on ${w}: ${l.num_lines} lines, not ${logLines} and the header`);
      },
    },
    {
      name: `${fileBytes / MB} MB FileUpload`,
      description: `FileUpload of ${fileBytes / MB} MB of random bytes (worker → master)`,
      payloadMB: fileBytes / MB,
      builder: (w) => ({ steps: [`steps.FileUpload(name='upload', workersrc=${pyString(uploadSrc)}, masterdest=${pyString(dest('uploaded', w))})`] }),
      check: async (_rig, w, b) => {
        success(`upload on ${w}`, b.results);
        if (sha256File(dest('uploaded', w)) !== uploadHash) throw new Error(`upload on ${w}: the file differs`);
        fs.rmSync(dest('uploaded', w));
      },
    },
    {
      name: `${fileBytes / MB} MB FileDownload`,
      description: `FileDownload of ${fileBytes / MB} MB of random bytes (master → worker)`,
      payloadMB: fileBytes / MB,
      builder: (w) => ({ steps: [`steps.FileDownload(name='download', mastersrc=${pyString(downloadSrc)}, workerdest=${pyString(dest('downloaded', w))})`] }),
      check: async (_rig, w, b) => {
        success(`download on ${w}`, b.results);
        if (sha256File(dest('downloaded', w)) !== downloadHash) throw new Error(`download on ${w}: the file differs`);
        fs.rmSync(dest('downloaded', w));
      },
    },
  ];

  const fx = await prepareE2E();
  dirs.push(fx.root);
  const builders: BuilderSpec[] = [];
  const slug = (name: string) => name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
  for (const w of [TETHER, REF] as const) {
    for (const s of scenarios) builders.push({ name: `${slug(s.name)}-${w}`, workernames: [w], ...s.builder(w) });
    builders.push({ name: `stream-${w}`, workernames: [w], steps: [`steps.ShellCommand(name='stream', command=${pyString(textProducer(streamBytes))})`] });
    builders.push({ name: `e2e-${w}`, workernames: [w], factory: "tether_e2e_factory(TEST['e2e'])" });
  }
  const tetherSecret = 'bench board secret';
  const refSecret = 'bench ref secret';
  const master = await createMaster({
    workers: [{ name: TETHER, password: tetherSecret }, { name: REF, password: refSecret }],
    builders,
    fixMsgpack: true,
    include: [E2E_STEPS_PY],
    vars: { e2e: fx.vars },
  });
  dirs.push(master.dir);
  const listenPort = await freePort();
  const masterRelays = { [TETHER]: new CountingRelay(master.msgpackPort), [REF]: new CountingRelay(master.msgpackPort) } as Record<WorkerName, CountingRelay>;
  for (const r of Object.values(masterRelays)) r.countWsFrames = true;
  const bridge = await tetherMaster({ buildbotPort: await masterRelays[TETHER].start(), listenPort, workers: { [TETHER]: tetherSecret } });
  const relays = { [TETHER]: new CountingRelay(listenPort), [REF]: new CountingRelay(await masterRelays[REF].start()) } as Record<WorkerName, CountingRelay>;
  const agent = await tetherAgent({ port: await relays[TETHER].start(), name: TETHER, secret: tetherSecret });
  const worker = await createWorker({ master: await relays[REF].start(), name: REF, password: refSecret });
  dirs.push(bridge.dir, agent.dir, worker.dir);
  const rig: Rig = { master, bridge, agent, worker, relays, masterRelays, dirs };
  try {
    await master.start();
    await bridge.start();
    await agent.start();
    await worker.start();
    await master.waitForWorker(TETHER);
    await master.waitForWorker(REF);
    opts.log('buildbot: master, tether-master, tether-agent and buildbot-worker are up');

    // Memory, idle: after a first build each (both have loaded what a build needs).
    for (const w of [TETHER, REF] as const) success(`warm-up on ${w}`, (await timeBuild(rig, `${slug(scenarios[0].name)}-${w}`)).results);
    await sleep(q ? 500 : 2000);
    const [tetherIdle, buildbotIdle, bridgeIdle] = await Promise.all([
      settledMemory(agent.pid!, 1000), settledMemory(worker.pid!, 1000), settledMemory(bridge.pid!, 1000),
    ]);

    const results: ScenarioResult[] = [];
    for (const s of scenarios) {
      const timed = await alternate(reps, async (side) => {
        const w = side === 'a' ? TETHER : REF;
        const b = await timeBuild(rig, `${slug(s.name)}-${w}`);
        await s.check(rig, w, b);
        return { ms: b.ms, bytes: b.bytes, cpu: b.cpu, master: b.master };
      }, (run) => run.ms);
      const runs = { [TETHER]: timed.a, [REF]: timed.b } as Record<WorkerName, typeof timed.a>;
      const { ratios } = timed;
      const med = (w: WorkerName) => median(runs[w].map((r) => r.ms)) / 1000;
      const bytes = (w: WorkerName) => median(runs[w].map((r) => r.bytes));
      const cpu = (w: WorkerName): BuildCpu => ({
        master: Math.round(median(runs[w].map((r) => r.cpu.master))),
        worker: Math.round(median(runs[w].map((r) => r.cpu.worker))),
        bridge: Math.round(median(runs[w].map((r) => r.cpu.bridge))),
      });
      const masterLink = (w: WorkerName): MasterLink => ({
        bytes: median(runs[w].map((r) => r.master.bytes)),
        messages: median(runs[w].map((r) => r.master.messages)),
        workerMessages: median(runs[w].map((r) => r.master.workerMessages)),
        workerBytes: median(runs[w].map((r) => r.master.workerBytes)),
      });
      const perMB = (w: WorkerName) => (s.payloadMB ? round(median(runs[w].map((r) => r.cpu.master)) / 1000 / s.payloadMB, 4) : null);
      const empty = results[0];
      const tNet = empty ? med(TETHER) - empty.tetherS : med(TETHER);
      const bNet = empty ? med(REF) - empty.buildbotS : med(REF);
      const r: ScenarioResult = {
        name: s.name,
        description: s.description,
        reps,
        tetherS: round(med(TETHER)),
        buildbotS: round(med(REF)),
        ratio: round(median(ratios)),
        tetherNetS: round(tNet),
        buildbotNetS: round(bNet),
        netRatio: round(tNet / bNet),
        tetherBytes: bytes(TETHER),
        buildbotBytes: bytes(REF),
        byteRatio: round(bytes(TETHER) / bytes(REF)),
        tetherRuns: runs[TETHER].map((x) => round(x.ms / 1000)),
        buildbotRuns: runs[REF].map((x) => round(x.ms / 1000)),
        tetherFirstS: round(timed.first.a.ms / 1000),
        buildbotFirstS: round(timed.first.b.ms / 1000),
        tetherCpu: cpu(TETHER),
        buildbotCpu: cpu(REF),
        tetherMasterLink: masterLink(TETHER),
        buildbotMasterLink: masterLink(REF),
        payloadMB: s.payloadMB ?? null,
        tetherMasterCpuSPerMB: perMB(TETHER),
        buildbotMasterCpuSPerMB: perMB(REF),
      };
      results.push(r);
      const cpuPerMB = r.payloadMB ? `; master CPU ${r.tetherMasterCpuSPerMB} / ${r.buildbotMasterCpuSPerMB} s per MB` : '';
      opts.log(
        `buildbot ${s.name}: Tether ${r.tetherS} s, buildbot-worker ${r.buildbotS} s, ratio ${r.ratio} (net ${r.netRatio}), runs ${r.tetherRuns.join(' ')} / ${r.buildbotRuns.join(' ')} (first builds ${r.tetherFirstS} / ${r.buildbotFirstS}); ` +
          `bytes ${r.tetherBytes} / ${r.buildbotBytes}${cpuPerMB}; messages to the master ${r.tetherMasterLink.workerMessages} / ${r.buildbotMasterLink.workerMessages}`,
      );
    }

    // Memory while streaming the same output through Buildbot.
    const streaming: Record<WorkerName, { max: number; maxUss: number }> = {} as never;
    let bridgeStreaming = NaN;
    for (const w of [TETHER, REF] as const) {
      const sampler = new RssSampler(w === TETHER ? agent.pid! : worker.pid!, 20);
      const bridgeSampler = new RssSampler(bridge.pid!, 20);
      const b = await timeBuild(rig, `stream-${w}`);
      streaming[w] = sampler.stop();
      const bridgePeak = bridgeSampler.stop().max;
      if (w === TETHER) bridgeStreaming = bridgePeak;
      success(`stream on ${w}`, b.results);
    }
    const memory: BuildbotMemory = {
      tetherIdleMB: round(tetherIdle.rss, 1),
      buildbotIdleMB: round(buildbotIdle.rss, 1),
      streamedBytes: streamBytes,
      tetherStreamingMB: round(streaming[TETHER].max, 1),
      buildbotStreamingMB: round(streaming[REF].max, 1),
      tetherIdleUssMB: round(tetherIdle.uss, 1),
      buildbotIdleUssMB: round(buildbotIdle.uss, 1),
      tetherStreamingUssMB: round(streaming[TETHER].maxUss, 1),
      buildbotStreamingUssMB: round(streaming[REF].maxUss, 1),
      bridgeIdleMB: round(bridgeIdle.rss, 1),
      bridgeStreamingMB: round(bridgeStreaming, 1),
    };
    opts.log(`buildbot memory: agent ${memory.tetherIdleMB} → ${memory.tetherStreamingMB} MB, buildbot-worker ${memory.buildbotIdleMB} → ${memory.buildbotStreamingMB} MB`);

    // The wire bytes of the e2e build.
    const e2e: Record<WorkerName, { ms: number; bytes: number }> = {} as never;
    // Tether's side of the e2e build is kept and decoded afterwards, out of the relay's way.
    const seen: Array<['up' | 'down', Buffer]> = [];
    relays[TETHER].tap = (direction, chunk) => void seen.push([direction, chunk]);
    for (const w of [TETHER, REF] as const) {
      const b = await timeBuild(rig, `e2e-${w}`);
      relays[TETHER].tap = null;
      const got = (await master.getBuildResult(b.buildid)).steps.map((s) => [s.name, s.result]);
      if (JSON.stringify(got) !== JSON.stringify(E2E_MAIN_STEPS)) throw new Error(`e2e on ${w}: steps ${JSON.stringify(got)}`);
      e2e[w] = { ms: b.ms, bytes: b.bytes };
    }
    const tap = new TetherWireTap();
    for (const [direction, chunk] of seen) tap.feed(direction, chunk);
    const wire = tap.summary();
    const buildbotOverhead = e2e[REF].bytes - wire.payload;
    const e2eResult = {
      tetherBytes: e2e[TETHER].bytes,
      buildbotBytes: e2e[REF].bytes,
      byteRatio: round(e2e[TETHER].bytes / e2e[REF].bytes),
      tetherS: round(e2e[TETHER].ms / 1000),
      buildbotS: round(e2e[REF].ms / 1000),
      steps: E2E_MAIN_STEPS.length,
      tetherWire: wire,
      tetherOverhead: wire.overhead,
      buildbotOverhead,
      overheadRatio: round(wire.overhead / buildbotOverhead),
      tetherWithDeflate: wire.withDeflate,
      byteRatioWithDeflate: round(wire.withDeflate / e2e[REF].bytes),
    };
    opts.log(
      `buildbot e2e build: ${e2eResult.tetherBytes} bytes on Tether's link, ${e2eResult.buildbotBytes} on msgpack's (${e2eResult.byteRatio}); ` +
        `payload ${wire.payload}, overhead ${wire.overhead} / ${buildbotOverhead}; with deflate ${wire.withDeflate} (${e2eResult.byteRatioWithDeflate})`,
    );
    return { available: true, scenarios: results, e2e: e2eResult, memory };
  } catch (error) {
    const tail = [master, bridge, agent, worker].map((p) => `--- ${p.name} ---\n${p.logTail(40).slice(-3000)}`).join('\n');
    throw new Error(`${(error as Error).message}\n${tail}`);
  } finally {
    await withTimeout(Promise.allSettled([worker.stop(), agent.stop()]), 30_000, 'workers to stop').catch(() => undefined);
    await withTimeout(Promise.allSettled([bridge.stop()]), 15_000, 'tether-master to stop').catch(() => undefined);
    await withTimeout(master.stop(), 30_000, 'the master to stop').catch(() => undefined);
    for (const r of [...Object.values(relays), ...Object.values(masterRelays)]) await r.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}
