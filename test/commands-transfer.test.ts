import t from 'tap';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import * as tar from 'tar';
import { commands } from '../agent/commands/registry';
import { FakeIO } from './helpers/fake-io';
import { tempDir } from './helpers/support';

/** Entry names and file contents of a tar archive. */
async function readTar(data: Buffer): Promise<{ names: string[]; files: Record<string, string> }> {
  const names: string[] = [];
  const files: Record<string, string> = {};
  const parser = new tar.Parser({
    onReadEntry: (entry) => {
      names.push(entry.path);
      const chunks: Buffer[] = [];
      entry.on('data', (c: Buffer) => chunks.push(c));
      entry.on('end', () => {
        if (entry.type === 'File') files[entry.path] = Buffer.concat(chunks).toString();
        if (entry.type === 'SymbolicLink') files[entry.path] = `-> ${entry.linkpath}`;
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    parser.on('end', resolve);
    parser.on('error', reject);
    parser.end(data);
  });
  return { names, files };
}

t.test('upload_file: byte-exact in blocksize blocks, bigger than the window, slow consumer', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  const data = randomBytes(3 * 1024 * 1024 + 123);
  fs.mkdirSync(path.join(base, 'build'));
  fs.writeFileSync(path.join(base, 'build', 'out.bin'), data);
  const io = new FakeIO({ basedir: base, window: 256 * 1024, consumeDelayMs: 1 });
  await commands.upload_file(
    { workdir: 'build', workersrc: 'out.bin', writer: null, maxsize: null, blocksize: 65536, keepstamp: false },
    io,
  );
  const out = io.bytes('write');
  t.ok(out.equals(data), 'byte-exact');
  const sizes = io.events.filter((e) => e.kind === 'write').map((e) => (e as { data: Buffer }).data.length);
  t.ok(sizes.slice(0, -1).every((n) => n === 65536), 'full blocks');
  t.equal(sizes[sizes.length - 1], data.length % 65536);
  t.equal(io.maxPending.write, 1, 'each block waits for the previous');
  t.ok(io.maxInFlight <= 256 * 1024, `bounded by the window (${io.maxInFlight})`);
  t.equal(io.events[0].kind === 'header' && io.events[0].text, `sending ${path.join(base, 'build', 'out.bin')}\n`);
  t.same(io.sequence.slice(-3), ['close', 'update:rc', 'update:elapsed']);
  t.equal(io.rc, 0);
});

t.test('upload_file: keepstamp sends the times with the close', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  const file = path.join(base, 'f.txt');
  fs.writeFileSync(file, 'x');
  fs.utimesSync(file, 1000000000.5, 1200000000.25);
  const io = new FakeIO({ basedir: base });
  await commands.uploadFile({ workdir: '.', workersrc: 'f.txt', maxsize: null, blocksize: 16, keepstamp: true }, io);
  const close = io.events.find((e) => e.kind === 'close') as { times?: { atime: number; mtime: number } };
  t.ok(close.times, 'times sent');
  t.ok(Math.abs((close.times as { atime: number }).atime - 1000000000.5) < 1e-6, 'atime, float seconds');
  t.ok(Math.abs((close.times as { mtime: number }).mtime - 1200000000.25) < 1e-6, 'mtime, float seconds');
});

t.test('upload_file: maxsize truncates with buildbot-worker text and rc 1', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  fs.writeFileSync(path.join(base, 'big'), Buffer.alloc(100, 7));
  const io = new FakeIO({ basedir: base });
  await commands.upload_file({ workdir: '.', workersrc: 'big', maxsize: 40, blocksize: 16 }, io);
  t.equal(io.bytes('write').length, 40);
  t.same(
    io.events.filter((e) => e.kind === 'write').map((e) => (e as { data: Buffer }).data.length),
    [16, 16, 8],
  );
  t.equal(io.rc, 1);
  // os.path.join(basedir, '.', 'big'): the '.' stays, as in buildbot's text
  t.equal(io.bytes('stderr').toString(), `Maximum filesize reached, truncating file '${base}/./big'`);
  t.same(io.sequence.slice(-4), ['close', 'update:rc', 'stderr', 'update:elapsed'], 'rc then stderr');
});

t.test('upload_file: a missing file is rc 1 with the Cannot open text', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  const io = new FakeIO({ basedir: base });
  await commands.upload_file({ workdir: 'w', workersrc: 'nope.txt', maxsize: null, blocksize: 16, keepstamp: true }, io);
  const p = path.join(base, 'w', 'nope.txt');
  t.same(io.sequence, ['header', 'close', 'update:rc', 'stderr', 'update:elapsed']);
  t.equal(io.headerText, `sending ${p}\n`);
  t.equal(io.rc, 1);
  t.equal(io.bytes('stderr').toString(), `Cannot open file '${p}' for upload`);

  const io2 = new FakeIO({ basedir: base });
  await commands.upload_file({ workdir: '', workersrc: '.', maxsize: null, blocksize: 16 }, io2);
  t.equal(io2.rc, 1, 'a directory cannot be opened either');
});

t.test('upload_file: missing maxsize is a KeyError before start', async (t) => {
  const io = new FakeIO({ basedir: await tempDir(t, 'tether-xfer-') });
  await t.rejects(commands.upload_file({ workdir: '.', workersrc: 'x', blocksize: 16 }, io), {
    message: "KeyError: 'maxsize'",
  });
  t.same(io.events, []);
});

t.test('upload_file: an interrupt stops the loop with rc 1, writer still closed', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  fs.writeFileSync(path.join(base, 'big'), Buffer.alloc(1024 * 1024, 1));
  const io = new FakeIO({ basedir: base, window: 1024, consumeDelayMs: 2 });
  let writes = 0;
  io.onEvent = (e) => {
    if (e.kind === 'write' && ++writes === 3) io.interrupt();
  };
  await commands.upload_file({ workdir: '.', workersrc: 'big', maxsize: null, blocksize: 1024 }, io);
  t.ok(writes <= 4, `stopped early (${writes} blocks)`);
  t.equal(io.rc, 1);
  t.equal(io.bytes('stderr').length, 0);
  t.ok(io.sequence.includes('close'));
  t.same(io.updates('elapsed'), []);
});

t.test('download_file: byte-exact, parents created, mode applied', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  const data = randomBytes(300 * 1024 + 5);
  const chunks: Buffer[] = [];
  for (let at = 0; at < data.length; at += 32 * 1024) chunks.push(data.subarray(at, at + 32 * 1024));
  const io = new FakeIO({ basedir: base, download: chunks });
  await commands.download_file(
    { workdir: 'build', workerdest: 'deep/dir/in.bin', reader: null, maxsize: null, blocksize: 16384, mode: 0o750 },
    io,
  );
  const dest = path.join(base, 'build', 'deep', 'dir', 'in.bin');
  t.ok(fs.readFileSync(dest).equals(data), 'byte-exact');
  t.equal(fs.statSync(dest).mode & 0o777, 0o750);
  t.same(io.sequence, ['update:rc', 'update:elapsed'], 'no header, rc, elapsed');
  t.equal(io.rc, 0);
});

t.test('download_file: maxsize keeps the first maxsize bytes, rc 1', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  const io = new FakeIO({ basedir: base, download: [Buffer.from('0123456789'), Buffer.from('abcdefghij')] });
  await commands.download_file({ workdir: '.', workerdest: 'f', maxsize: 15, blocksize: 4, mode: null }, io);
  t.equal(fs.readFileSync(path.join(base, 'f'), 'utf8'), '0123456789abcde');
  t.equal(io.rc, 1);
  t.equal(io.bytes('stderr').toString(), `Maximum filesize reached, truncating file '${base}/./f'`);

  // exactly maxsize: buildbot-worker never reads the EOF and reports it too
  const io2 = new FakeIO({ basedir: base, download: [Buffer.from('12345')] });
  await commands.download_file({ workdir: '.', workerdest: 'g', maxsize: 5, blocksize: 4, mode: null }, io2);
  t.equal(fs.readFileSync(path.join(base, 'g'), 'utf8'), '12345');
  t.equal(io2.rc, 1);
});

t.test('download_file: an unwritable destination is rc 1 with the Cannot open text', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  fs.writeFileSync(path.join(base, 'file'), 'x');
  const io = new FakeIO({ basedir: base, download: [Buffer.from('data')] });
  await commands.download_file({ workdir: '.', workerdest: 'file/sub', maxsize: null, blocksize: 16, mode: null }, io);
  t.equal(io.rc, 1);
  t.equal(io.bytes('stderr').toString(), `Cannot open file '${base}/./file/sub' for download`);
  t.same(io.sequence, ['update:rc', 'stderr', 'update:elapsed']);
});

t.test('download_file: an absolute workerdest, and ~ expansion', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  const other = await tempDir(t, 'tether-xfer-');
  const io = new FakeIO({ basedir: base, download: [Buffer.from('abs')] });
  await commands.download_file(
    { workdir: 'w', workerdest: path.join(other, 'x.txt'), maxsize: null, blocksize: 16, mode: null },
    io,
  );
  t.equal(fs.readFileSync(path.join(other, 'x.txt'), 'utf8'), 'abs');

  const savedHome = process.env.HOME;
  process.env.HOME = other;
  t.teardown(() => {
    process.env.HOME = savedHome;
  });
  const io2 = new FakeIO({ basedir: base, download: [Buffer.from('home')] });
  await commands.download_file({ workdir: 'w', workerdest: '~/h.txt', maxsize: null, blocksize: 16, mode: null }, io2);
  t.equal(fs.readFileSync(path.join(other, 'h.txt'), 'utf8'), 'home');
});

function makeTree(base: string): string {
  const src = path.join(base, 'build', 'dist');
  fs.mkdirSync(path.join(src, 'sub', 'deeper'), { recursive: true });
  fs.writeFileSync(path.join(src, 'a.txt'), 'alpha');
  fs.writeFileSync(path.join(src, 'sub', 'b.txt'), 'beta');
  fs.writeFileSync(path.join(src, 'sub', 'deeper', 'c.bin'), Buffer.from([0, 1, 2, 255]).toString('latin1'));
  fs.writeFileSync(path.join(src, '.hidden'), 'h');
  fs.symlinkSync('a.txt', path.join(src, 'link'));
  return src;
}

t.test('upload_directory: a tar of the directory contents (uncompressed)', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  const src = makeTree(base);
  const io = new FakeIO({ basedir: base, window: 4096, consumeDelayMs: 0 });
  await commands.upload_directory(
    { workdir: 'build', workersrc: 'dist', writer: null, maxsize: null, blocksize: 1024, compress: null },
    io,
  );
  t.equal(io.rc, 0);
  t.equal(io.headerText, `sending ${src}\n`);
  t.equal(io.maxPending.write, 1);
  const sizes = io.events.filter((e) => e.kind === 'write').map((e) => (e as { data: Buffer }).data.length);
  t.ok(sizes.slice(0, -1).every((n) => n === 1024), 'blocksize blocks');
  const { names, files } = await readTar(io.bytes('write'));
  t.same(names, ['.hidden', 'a.txt', 'link', 'sub/', 'sub/b.txt', 'sub/deeper/', 'sub/deeper/c.bin']);
  t.same(files, {
    '.hidden': 'h',
    'a.txt': 'alpha',
    link: '-> a.txt',
    'sub/b.txt': 'beta',
    'sub/deeper/c.bin': Buffer.from([0, 1, 2, 255]).toString('latin1'),
  });
  t.same(io.sequence.slice(-3), ['close', 'update:rc', 'update:elapsed'], 'unpack (close) before rc');
});

t.test('upload_directory: gz and bz2 compression', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  makeTree(base);
  const io = new FakeIO({ basedir: base });
  await commands.uploadDirectory({ workdir: 'build', workersrc: 'dist', maxsize: null, blocksize: 512, compress: 'gz' }, io);
  t.equal(io.rc, 0);
  const gz = io.bytes('write');
  t.same([gz[0], gz[1]], [0x1f, 0x8b], 'gzip magic');
  t.same((await readTar(gunzipSync(gz))).files['sub/b.txt'], 'beta');

  const hasBzip2 = ['/usr/bin/bzip2', '/bin/bzip2'].some((p) => fs.existsSync(p));
  const io2 = new FakeIO({ basedir: base });
  const run = commands.upload_directory(
    { workdir: 'build', workersrc: 'dist', maxsize: null, blocksize: 512, compress: 'bz2' },
    io2,
  );
  if (!hasBzip2) {
    await t.rejects(run, { message: /bzip2/ });
    return;
  }
  await run;
  t.equal(io2.rc, 0);
  const bz = io2.bytes('write');
  t.equal(bz.subarray(0, 3).toString(), 'BZh', 'bzip2 magic');
  const plain = execFileSync('bzip2', ['-dc'], { input: bz });
  t.same((await readTar(plain)).files['a.txt'], 'alpha');
});

t.test('upload_directory: maxsize truncates; missing source fails the command', async (t) => {
  const base = await tempDir(t, 'tether-xfer-');
  const src = makeTree(base);
  fs.writeFileSync(path.join(src, 'big.bin'), randomBytes(200 * 1024));
  const io = new FakeIO({ basedir: base });
  await commands.upload_directory({ workdir: 'build', workersrc: 'dist', maxsize: 10000, blocksize: 4096, compress: null }, io);
  t.equal(io.bytes('write').length, 10000);
  t.equal(io.rc, 1);
  t.equal(io.bytes('stderr').toString(), `Maximum filesize reached, truncating file '${src}'`);
  t.ok(io.sequence.includes('close'), 'unpack still requested, as buildbot-worker does');

  const io2 = new FakeIO({ basedir: base });
  await t.rejects(
    commands.upload_directory({ workdir: 'build', workersrc: 'nope', maxsize: null, blocksize: 4096, compress: null }, io2),
    { message: `FileNotFoundError: [Errno 2] No such file or directory: '${path.join(base, 'build', 'nope')}'` },
  );
  t.same(io2.sequence, ['update:elapsed'], 'no header, no rc: the exception ends it');
});
