import t from 'tap';
import {
  DEFAULT_NEWLINE_RE,
  LOGFILE_READ_BYTES,
  LineBoundaryFinder,
  LogLines,
  PIPE_READ_BYTES,
  StreamDecoder,
  pythonNewlineRe,
} from '../master-plugin/buildbot-lines';
import { PathMapper, basicAuthHeader, buildWorkerInfo, workerCommands } from '../master-plugin/buildbot-protocol';

t.test('newline_re from the master translates to JS', async (t) => {
  const re = pythonNewlineRe(DEFAULT_NEWLINE_RE);
  const sub = (s: string): string => s.replace(re, '\n');
  t.equal(sub('a\r\nb'), 'a\nb');
  t.equal(sub('a\rb'), 'a\nb');
  t.equal(sub('a\r'), 'a\r', 'a trailing \\r waits for the next character');
  t.equal(sub('a\x1b[2Jb'), 'a\nb');
  t.equal(sub('a\x1b[12;3Hb'), 'a\nb');
  t.equal(sub('a\x1b[ub'), 'a\nb');
  t.equal(sub('a\x08\x08\x08b'), 'a\nb');
  t.equal(sub('a\r\rb'), 'a\n\nb', "Python's '.' matches \\r");
  t.equal(pythonNewlineRe('(?P<x>broken').source, pythonNewlineRe(undefined).source, 'falls back on Python-only syntax');
  t.equal(pythonNewlineRe('x*').source, pythonNewlineRe(undefined).source, 'refuses an expression matching empty text');
});

t.test('LineBoundaryFinder holds partial lines and reports positions and times', async (t) => {
  const f = new LineBoundaryFinder(pythonNewlineRe(DEFAULT_NEWLINE_RE), 4096);
  t.equal(f.append('hel', 1), null);
  t.same(f.append('lo\nwor', 2), ['hello\n', [5], [1]]);
  t.same(f.append('ld\nx\ny', 3), ['world\nx\n', [5, 7], [2, 3]]);
  t.same(f.flush(), ['y\n', [1], [3]]);
  t.equal(f.flush(), null);
  t.same(f.append('a\r', 4), null, '\\r at the end is held');
  t.same(f.append('\nb\n', 5), ['a\nb\n', [1, 3], [4, 5]], '\\r\\n split across chunks is one newline');
});

t.test('LineBoundaryFinder splits long lines and bounds what it holds', async (t) => {
  const f = new LineBoundaryFinder(pythonNewlineRe(undefined), 10);
  const r = f.append('0123456789abcdefghij\n', 1)!;
  t.same(r[0], '012345678\n9abcdefgh\nij\n');
  t.same(r[1], [9, 19, 22]);
  const r2 = f.append('x'.repeat(25), 2)!;
  t.same(r2[0], 'xxxxxxxxx\nxxxxxxxxx\n');
  t.ok(f.pending < 10);
  t.same(f.flush()![0], 'xxxxxxx\n');
  // a surrogate pair is never cut in half
  const g = new LineBoundaryFinder(pythonNewlineRe(undefined), 4);
  const s = g.append('ab\u{1F600}cd\n', 1)!;
  t.notOk(/[\ud800-\udbff]\n/.test(s[0]), s[0]);
  t.equal(s[0].replace(/\n/g, ''), 'ab\u{1F600}cd');
});

t.test('StreamDecoder keeps multi-byte characters split across chunks', async (t) => {
  const bytes = Buffer.from('h\u00e9\u20ac\u{1F600}!', 'utf8');
  const d = new StreamDecoder();
  let out = '';
  for (const b of bytes) out += d.write(Buffer.from([b]));
  out += d.end();
  t.equal(out, 'h\u00e9\u20ac\u{1F600}!');
  const bad = new StreamDecoder();
  t.equal(bad.write(Buffer.from([0x61, 0xff, 0x62])) + bad.end(), 'a\ufffdb', 'invalid bytes become U+FFFD');
  const cut = new StreamDecoder();
  t.equal(cut.write(Buffer.from([0x61, 0xe2, 0x82])) + cut.end(), 'a\ufffd', 'a truncated character at the end becomes U+FFFD');
});

t.test("LogLines takes bytes in buildbot-worker's reads: 8192 from a pipe, 10000 from a logfile", async (t) => {
  t.equal(PIPE_READ_BYTES, 8192);
  t.equal(LOGFILE_READ_BYTES, 10_000);
  const lines = new LogLines(pythonNewlineRe(undefined), 4096);
  // about 40 000 bytes of lines; an 'é' (two bytes) across the end of the first pipe read
  const text = ('x'.repeat(4000) + '\n').repeat(2) + 'y'.repeat(189) + '\u00e9\n' + ('z'.repeat(99) + '\n').repeat(318);
  const bytes = Buffer.from(text, 'utf8');
  t.equal(bytes.indexOf(Buffer.from('\u00e9')), 8191, 'the character straddles byte 8192');
  const got: Record<string, string[]> = { stdout: [], 'log:build.log': [] };
  for (const log of ['stdout', 'log:build.log']) lines.append(log, bytes, 1, (info) => got[log].push(info[0]));
  lines.append('stdout', 'held', 2, () => t.fail('a partial line is held'));
  t.equal(got.stdout.length, Math.ceil(bytes.length / 8192), 'one batch of lines per 8192-byte read');
  t.equal(got['log:build.log'].length, Math.ceil(bytes.length / 10_000), 'one per 10000-byte read');
  t.equal(got.stdout.join(''), text, 'every line, whole, the split character too');
  t.equal(got['log:build.log'].join(''), text);
  const flushed: Array<[string, string]> = [];
  lines.flush(3, (log, info) => flushed.push([log, info[0]]));
  t.same(flushed, [['stdout', 'held\n']], 'flush: the held partial line, with a newline');
});

t.test('PathMapper strips the reported basedir', async (t) => {
  const m = new PathMapper('/home/agent/work', 'posix');
  t.equal(m.toAgent('/home/agent/work/b1/build'), 'b1/build');
  t.equal(m.toAgent('/home/agent/work'), '.');
  t.equal(m.toAgent('/home/agent/work/'), '.');
  t.equal(m.toAgent('/home/agent/work/b1/build/*/'), 'b1/build/*/', 'no normalisation: a glob keeps its trailing slash');
  t.equal(m.toAgent('/home/agent/workshop/x'), '/home/agent/workshop/x', 'a sibling with the same prefix is outside');
  t.equal(m.toAgent('/etc/passwd'), '/etc/passwd', 'outside paths pass through');
  t.same(m.mapArgs('mkdir', { paths: ['/home/agent/work/b1', '/home/agent/work/info'] }), { paths: ['b1', 'info'] });
  t.same(m.mapArgs('cpdir', { from_path: '/home/agent/work/b/s', to_path: '/home/agent/work/b/d', timeout: 5 }), {
    from_path: 'b/s',
    to_path: 'b/d',
    timeout: 5,
  });
  t.same(m.mapArgs('shell', { workdir: '/home/agent/work/b1/build', command: ['ls'] }), { workdir: 'b1/build', command: ['ls'] });
  t.same(m.mapArgs('upload_file', { path: '/home/agent/work/b1/build/out.bin', workdir: 'build', workersrc: 'out.bin' }), {
    path: 'b1/build/out.bin',
    workdir: 'build',
    workersrc: 'out.bin',
  });
  const slash = new PathMapper('/srv/w/', 'posix');
  t.equal(slash.toAgent('/srv/w/b'), 'b');
  const dot = new PathMapper('.', 'posix');
  t.equal(dot.toAgent('./b1/build'), 'b1/build');
  t.equal(dot.toAgent('.'), '.');
  const nt = new PathMapper('C:\\agent', 'nt');
  t.equal(nt.toAgent('C:\\agent\\b1\\build'), 'b1/build');
  t.equal(nt.toAgent('c:\\AGENT\\b1'), 'b1');
});

t.test('worker info in buildbot-worker shape', async (t) => {
  const info = buildWorkerInfo({
    os: 'linux',
    arch: 'arm',
    hostname: 'dev1',
    basedir: '/work',
    environ: { PATH: '/bin', BAD: 3 },
    version: '0.1.0',
    admin: 'ops <ops@example.org>',
  });
  t.equal(info.host, 'dev1');
  t.equal(info.admin, 'ops <ops@example.org>');
  t.equal(info.access_uri, null);
  t.equal(info.version, '0.1.0');
  t.equal(info.system, 'posix');
  t.equal(info.basedir, '/work');
  t.equal(info.numcpus, 1);
  t.equal(info.delete_leftover_dirs, false);
  t.same(info.environ, { PATH: '/bin' });
  t.equal(info.os, 'linux', 'other keys pass through as worker properties');
  const wc = info.worker_commands as Record<string, string>;
  for (const n of ['shell', 'upload_file', 'upload_directory', 'download_file', 'mkdir', 'rmdir', 'cpdir', 'stat', 'glob', 'listdir', 'rmfile', 'uploadFile', 'uploadDirectory', 'downloadFile']) {
    t.equal(wc[n], '3.1', n);
  }
  t.same(workerCommands(), wc);
  t.same(
    buildWorkerInfo({ commands: ['shell', 'upload_file', 'stat'] }).worker_commands,
    { shell: '3.1', uploadFile: '3.1', upload_file: '3.1', stat: '3.1' },
    'an agent that reports its commands gets only those offered to Buildbot, under both names',
  );
  t.equal(buildWorkerInfo({ os: 'windows', host: 'h', numcpus: 4 }).system, 'nt');
  t.equal(buildWorkerInfo({ numcpus: 4 }).numcpus, 4);
  t.equal(buildWorkerInfo({}).basedir, '.');
});

t.test('basic auth header', async (t) => {
  t.equal(basicAuthHeader('w1', 'p:w'), 'Basic ' + Buffer.from('w1:p:w').toString('base64'));
  t.throws(() => basicAuthHeader('a:b', 'x'));
});
