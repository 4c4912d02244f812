/**
 * A Buildbot build over a noisy serial line: the line simulator flips bits at
 * a rate of 1e-5 and drops 0.1 % of the bytes, both ways. The CRC catches
 * every damaged frame and the session sends it again, so the build completes
 * with byte-exact logs and files: shell steps, a 1 MB log, and a 200 KB
 * upload and download.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createMaster, teardownBuildbot } from './helpers/buildbot';
import { simulatedLine } from './helpers/line-sim';
import { serialTetherAgent, serialTetherMaster } from './helpers/serial-procs';
import { makeTempDir } from './helpers/support';

const BAUD = 921600;
const LOG_LINES = 16384; // 64 bytes each: 1 MiB
const FILE = 200_000;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('a build completes byte-exact through bit flips and dropped bytes', async (t) => {
  const dir = await makeTempDir('tether-noise-');
  const downloadData = randomBytes(FILE);
  fs.writeFileSync(path.join(dir, 'down-src.bin'), downloadData);
  const line = await simulatedLine({ baud: BAUD, noise: { seed: 20261128, bitErrorRate: 1e-5, dropRate: 1e-3 } });
  t.teardown(() => line.close());
  const secret = 'noisy secret';
  const master = await createMaster({
    workers: [{ name: 'rig', password: secret }],
    fixMsgpack: true,
    builders: [{
      name: 'noisy',
      steps: [
        `steps.ShellCommand(name='hello', command=['sh', '-c', 'echo hello; echo "to stderr" >&2'])`,
        `steps.ShellCommand(name='big-log', command=['python3', '-c', 'import sys\\nfor i in range(${LOG_LINES}): sys.stdout.write("%07d %s\\\\n" % (i, "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU"[:55]))'])`,
        `steps.ShellCommand(name='make-file', command='head -c ${FILE} /dev/urandom > up.bin && sha256sum up.bin')`,
        `steps.FileUpload(name='upload', workersrc='up.bin', masterdest=${JSON.stringify(path.join(dir, 'up.bin'))})`,
        `steps.FileDownload(name='download', mastersrc=${JSON.stringify(path.join(dir, 'down-src.bin'))}, workerdest='down.bin')`,
        `steps.ShellCommand(name='check', command='sha256sum down.bin')`,
      ],
    }],
  });
  const bridge = await serialTetherMaster({ buildbotPort: master.msgpackPort, device: line.masterPath, worker: 'rig', workers: { rig: secret }, baud: BAUD });
  const agent = await serialTetherAgent({ device: line.agentPath, name: 'rig', secret, baud: BAUD });
  teardownBuildbot(t, master, bridge, agent, dir);
  await master.start();
  await bridge.start();
  await bridge.waitForOutput(/listening on serial:/);
  await agent.start();
  await master.waitForWorker('rig');
  const build = await master.runBuild('noisy', { timeoutMs: 600_000 });
  t.equal(build.result, 'success', `the build succeeds (${build.state_string})`);
  const stdio = (name: string) => build.step(name)!.log('stdio')!.stdio!;
  t.same(stdio('hello'), { ...stdio('hello'), stdout: 'hello\n', stderr: 'to stderr\n' }, 'short output exact');
  const lines = stdio('big-log').stdout.split('\n').slice(0, -1);
  t.equal(lines.length, LOG_LINES, 'every line of the 1 MiB log');
  t.ok(lines.every((l, i) => l === `${String(i).padStart(7, '0')} ${'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU'.slice(0, 55)}`), 'each line exact, in order');
  t.equal(sha(fs.readFileSync(path.join(dir, 'up.bin'))), stdio('make-file').stdout.split(' ')[0], 'the 200 KB upload is byte-exact');
  t.equal(stdio('check').stdout.split(' ')[0], sha(downloadData), 'the 200 KB download is byte-exact');
  const { ab, ba } = line.sim.stats;
  t.ok(ab.flipped + ba.flipped > 0 && ab.dropped + ba.dropped > 0,
    `the line was noisy: ${ab.flipped + ba.flipped} bits flipped, ${ab.dropped + ba.dropped} bytes dropped of ${ab.bytesIn + ba.bytesIn}`);
});
