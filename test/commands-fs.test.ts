import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { commands, getAllCommandNames } from '../agent/commands/registry';
import { FakeIO } from './helpers/fake-io';

function tempdir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tether-fs-'));
  t.teardown(() => {
    fs.chmodSync(dir, 0o755);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

t.test('the registry has every buildbot-worker command name', async (t) => {
  t.same(getAllCommandNames().sort(), [
    'cpdir',
    'downloadFile',
    'download_file',
    'glob',
    'listdir',
    'mkdir',
    'rmdir',
    'rmfile',
    'shell',
    'stat',
    'uploadDirectory',
    'uploadFile',
    'upload_directory',
    'upload_file',
  ]);
  t.equal(commands.uploadFile, commands.upload_file);
});

t.test('mkdir: creates parents; an existing directory is fine', async (t) => {
  const base = tempdir(t);
  fs.mkdirSync(path.join(base, 'exists'));
  const io = new FakeIO({ basedir: base });
  await commands.mkdir({ paths: [path.join(base, 'a/b/c'), path.join(base, 'exists')] }, io);
  t.ok(fs.statSync(path.join(base, 'a/b/c')).isDirectory());
  t.same(io.sequence, ['update:rc', 'update:elapsed']);
  t.equal(io.rc, 0);

  const io2 = new FakeIO({ basedir: base });
  await commands.mkdir({ dir: 'build/x' }, io2);
  t.ok(fs.statSync(path.join(base, 'build/x')).isDirectory(), "Buildbot's dir, relative to basedir");
  t.equal(io2.rc, 0);
});

t.test('mkdir: errors are a header and rc = errno', async (t) => {
  const base = tempdir(t);
  fs.writeFileSync(path.join(base, 'file'), 'x');
  const io = new FakeIO({ basedir: base });
  await commands.mkdir({ paths: [path.join(base, 'file')] }, io);
  t.equal(io.headerText, `mkdir: File exists: ${base}/file`);
  t.equal(io.rc, 17);

  const io2 = new FakeIO({ basedir: base });
  await commands.mkdir({ paths: [path.join(base, 'ok'), path.join(base, 'file/sub'), path.join(base, 'never')] }, io2);
  t.equal(io2.headerText, `mkdir: Not a directory: ${base}/file/sub`);
  t.equal(io2.rc, 20);
  t.ok(fs.existsSync(path.join(base, 'ok')));
  t.notOk(fs.existsSync(path.join(base, 'never')), 'stops at the first failure');

  const io3 = new FakeIO({ basedir: base });
  await t.rejects(commands.mkdir({}, io3), { message: 'MakeDirectory is missing args: paths' });
});

t.test('rmdir: removes trees (also unwritable ones); missing paths are fine', async (t) => {
  const base = tempdir(t);
  fs.mkdirSync(path.join(base, 'build/sub/locked'), { recursive: true });
  fs.writeFileSync(path.join(base, 'build/sub/locked/f'), 'x');
  fs.chmodSync(path.join(base, 'build/sub/locked'), 0o000);
  fs.mkdirSync(path.join(base, 'other'));
  const io = new FakeIO({ basedir: base });
  await commands.rmdir({ dir: ['build', 'other', 'missing'], logEnviron: false }, io);
  t.notOk(fs.existsSync(path.join(base, 'build')));
  t.notOk(fs.existsSync(path.join(base, 'other')));
  t.equal(io.rc, 0);
  t.match(io.headerText, `rm -rf ${base}/build\n in dir ${base} (timeout 120 secs)\n watching logfiles {}\n argv: [b'rm', b'-rf', b'${base}/build']\n using PTY: False\n`);
  t.equal(io.headerText.match(/elapsedTime=/g)?.length, process.getuid?.() === 0 ? 3 : 5, 'one run per path (plus chmod + retry when not root)');
  t.same(io.sequence.slice(-2), ['update:rc', 'update:elapsed']);
});

t.test('rmdir: a failure is reported in rc, other paths still removed', async (t) => {
  const base = tempdir(t);
  // rm -rf cannot remove the basedir's parent's entry for '.'; use a path it refuses
  fs.mkdirSync(path.join(base, 'gone'));
  const io = new FakeIO({ basedir: base });
  await commands.rmdir({ paths: [`${base}/.`, path.join(base, 'gone')], logEnviron: false }, io);
  t.not(io.rc, 0, 'rm refuses to remove "."');
  t.match(io.bytes('stderr').toString(), /rm: refusing to remove/);
  t.notOk(fs.existsSync(path.join(base, 'gone')));
});

t.test('cpdir: copies with cp -R -P -p -v, creating the parent', async (t) => {
  const base = tempdir(t);
  fs.mkdirSync(path.join(base, 'src/sub'), { recursive: true });
  fs.writeFileSync(path.join(base, 'src/sub/f.txt'), 'data');
  fs.symlinkSync('sub/f.txt', path.join(base, 'src/link'));
  const io = new FakeIO({ basedir: base });
  await commands.cpdir({ fromdir: 'src', todir: 'dst/deep/copy', logEnviron: false }, io);
  t.equal(io.rc, 0);
  t.equal(fs.readFileSync(path.join(base, 'dst/deep/copy/sub/f.txt'), 'utf8'), 'data');
  t.equal(fs.readlinkSync(path.join(base, 'dst/deep/copy/link')), 'sub/f.txt', 'symlink kept (-P)');
  t.match(io.headerText, `cp -R -P -p -v ${base}/src ${base}/dst/deep/copy\n`);
  t.match(io.bytes('stdout').toString(), `'${base}/src/sub/f.txt' -> '${base}/dst/deep/copy/sub/f.txt'`);

  const io2 = new FakeIO({ basedir: base });
  await commands.cpdir({ from_path: path.join(base, 'nope'), to_path: path.join(base, 'x'), logEnviron: false }, io2);
  t.equal(io2.rc, 1);
  t.match(io2.bytes('stderr').toString(), `cp: cannot stat '${base}/nope': No such file or directory`);
});

t.test('stat: the os.stat tuple; missing file is header + rc 2', async (t) => {
  const base = tempdir(t);
  fs.mkdirSync(path.join(base, 'w'));
  fs.writeFileSync(path.join(base, 'w', 'f.txt'), 'hello');
  fs.utimesSync(path.join(base, 'w', 'f.txt'), 1500000000.75, 1600000000.25);
  const io = new FakeIO({ basedir: base });
  await commands.stat({ workdir: 'w', file: 'f.txt' }, io);
  const [st] = io.updates('stat') as number[][];
  const real = fs.statSync(path.join(base, 'w', 'f.txt'));
  t.same(st, [real.mode, real.ino, real.dev, real.nlink, real.uid, real.gid, 5, 1500000000, 1600000000, Math.floor(real.ctimeMs / 1000)]);
  t.ok((st[0] & 0o170000) === 0o100000, 'S_ISREG on the mode');
  t.same(io.sequence, ['update:stat', 'update:rc', 'update:elapsed']);
  t.equal(io.rc, 0);

  const io2 = new FakeIO({ basedir: base });
  await commands.stat({ path: path.join(base, 'nope') }, io2);
  t.equal(io2.headerText, `stat: No such file or directory: ${base}/nope`);
  t.equal(io2.rc, 2);
  t.same(io2.updates('stat'), []);
});

t.test('glob: Python glob semantics (recursive **, hidden files, classes)', async (t) => {
  const base = tempdir(t);
  for (const f of ['a.txt', 'b.txt', 'c.log', '.hidden.txt', 'd/x.txt', 'd/e/y.txt', '.h/z.txt']) {
    fs.mkdirSync(path.dirname(path.join(base, f)), { recursive: true });
    fs.writeFileSync(path.join(base, f), '');
  }
  const run = async (pattern: string) => {
    const io = new FakeIO({ basedir: base });
    await commands.glob({ path: pattern }, io);
    t.equal(io.rc, 0);
    return (io.updates('files')[0] as string[]).slice().sort();
  };
  t.same(await run('*.txt'), [`${base}/a.txt`, `${base}/b.txt`]);
  t.same(await run('[!a].*'), [`${base}/b.txt`, `${base}/c.log`]);
  t.same(await run('.*'), [`${base}/.h`, `${base}/.hidden.txt`]);
  t.same(await run('**/*.txt'), [`${base}/a.txt`, `${base}/b.txt`, `${base}/d/e/y.txt`, `${base}/d/x.txt`]);
  t.same(await run('d/**'), [`${base}/d/`, `${base}/d/e`, `${base}/d/e/y.txt`, `${base}/d/x.txt`]);
  t.same(await run('nothing*'), []);
  t.same(await run('a.txt'), [`${base}/a.txt`]);
});

t.test('listdir: names in directory order; errors are header + rc', async (t) => {
  const base = tempdir(t);
  for (const f of ['z', 'a', 'm']) fs.writeFileSync(path.join(base, f), '');
  const io = new FakeIO({ basedir: base });
  await commands.listdir({ dir: '.' }, io);
  t.same((io.updates('files')[0] as string[]).slice().sort(), ['a', 'm', 'z']);
  t.equal(io.rc, 0);

  const io2 = new FakeIO({ basedir: base });
  await commands.listdir({ path: path.join(base, 'nope') }, io2);
  t.equal(io2.headerText, `listdir: No such file or directory: ${base}/nope`);
  t.equal(io2.rc, 2);

  const io3 = new FakeIO({ basedir: base });
  await commands.listdir({ path: path.join(base, 'a') }, io3);
  t.equal(io3.headerText, `listdir: Not a directory: ${base}/a`);
  t.equal(io3.rc, 20);
});

t.test('rmfile: removes a file; missing or a directory is header + rc', async (t) => {
  const base = tempdir(t);
  fs.writeFileSync(path.join(base, 'f'), '');
  fs.mkdirSync(path.join(base, 'd'));
  const io = new FakeIO({ basedir: base });
  await commands.rmfile({ path: 'f' }, io);
  t.notOk(fs.existsSync(path.join(base, 'f')));
  t.equal(io.rc, 0);

  const io2 = new FakeIO({ basedir: base });
  await commands.rmfile({ path: 'f' }, io2);
  t.equal(io2.headerText, `rmfile: No such file or directory: ${base}/f`);
  t.equal(io2.rc, 2);

  const io3 = new FakeIO({ basedir: base });
  await commands.rmfile({ path: 'd' }, io3);
  t.equal(io3.headerText, `rmfile: Is a directory: ${base}/d`);
  t.equal(io3.rc, 21);
});
