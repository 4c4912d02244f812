/**
 * The library example of docs/library.md, run as written: type-checked
 * against master-plugin/index.ts, then compiled and run with `tether`
 * resolving to this checkout (package.json "main"), the way a project that
 * depends on tether runs it, against a real tether-agent process.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ts from 'typescript';
import { AGENT_BIN } from './helpers/tether-procs';
import { REPO_ROOT, freePort, listening, tempDir } from './helpers/support';

/** The first ```ts block of docs/library.md. */
function libraryExample(): string {
  const page = fs.readFileSync(path.join(REPO_ROOT, 'docs', 'library.md'), 'utf8');
  const block = /^```ts\n([\s\S]*?)^```$/m.exec(page);
  if (!block) throw new Error('docs/library.md has no ```ts block');
  return block[1];
}

t.test('the library example of docs/library.md runs as written', async (t) => {
  const source = libraryExample();
  t.ok(source.split('\n').length <= 25, 'a short example');
  const dir = await tempDir(t, 'tether-api-example-');
  fs.writeFileSync(path.join(dir, 'example.ts'), source);

  // Type-check it against the library's sources (there is no .d.ts in build/).
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'commonjs', moduleResolution: 'node', lib: ['ES2022'], strict: true,
      esModuleInterop: true, skipLibCheck: true, noEmit: true, types: ['node'],
      typeRoots: [path.join(REPO_ROOT, 'node_modules', '@types')],
      baseUrl: '.', paths: { tether: [path.join(REPO_ROOT, 'master-plugin', 'index.ts')] },
    },
    files: ['example.ts'],
  }));
  const tsc = spawnSync(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { encoding: 'utf8' });
  t.equal(tsc.status, 0, `the example type-checks:\n${tsc.stdout}${tsc.stderr}`);

  // Compile and run it with 'tether' installed as this checkout.
  const js = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  }).outputText;
  fs.writeFileSync(path.join(dir, 'example.js'), js);
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(REPO_ROOT, path.join(dir, 'node_modules', 'tether'), 'dir');

  const port = await freePort();
  // The example reads the worker's secret from this file in its directory; the agent reads the same one.
  const secretFile = path.join(dir, 'board-01.secret');
  fs.writeFileSync(secretFile, 'example-secret\n', { mode: 0o600 });
  const example = spawn(process.execPath, ['example.js'], {
    cwd: dir,
    env: { ...process.env, TETHER_LISTEN: `tcp://127.0.0.1:${port}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  example.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  example.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => example.once('close', (code) => resolve(code)));
  t.teardown(() => {
    if (example.exitCode === null && example.signalCode === null) example.kill('SIGKILL');
  });

  await listening(port);
  const agent = spawn(process.execPath, [
    AGENT_BIN, '--master', `tcp://127.0.0.1:${port}`, '--name', 'board-01', '--secret-file', secretFile, '--basedir', path.join(dir, 'agent'),
  ], { stdio: 'ignore' });
  const agentGone = new Promise((resolve) => agent.once('exit', resolve));
  t.teardown(async () => {
    if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGTERM');
    await agentGone;
  });

  const code = await exited;
  t.equal(code, 0, stderr);
  t.equal(stdout, `${os.machine()}\nmake exited with 0\n`, 'the remote output, then the exit code');
  t.equal(stderr, '');
  t.equal(fs.readFileSync(path.join(dir, 'out.txt'), 'utf8'), 'built\n', 'getFile brought the file over');
});
