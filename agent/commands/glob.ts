/**
 * 'glob': buildbot_worker/commands/fs.py GlobPath.
 *
 * Arguments: path, a shell pattern (relative to io.basedir). Sends 'files'
 * with glob.glob(path, recursive=True) — see pyglob.ts — then rc 0. A
 * pattern matching nothing gives files [] and rc 0; glob itself swallows
 * directory errors, so the "glob: <strerror>: <path>" / rc=errno branch of
 * fs.py is kept for completeness only.
 */
import { defineCommand, sendOSError } from './base';
import { pyGlob } from './pyglob';

export const glob = defineCommand<{ path: string }>({
  name: 'glob',
  className: 'GlobPath',
  requiredArgs: ['path'],
  setup: (args) => ({ path: args.path as string }),
  async start({ path }, _io, ctx) {
    let files: string[];
    try {
      files = pyGlob(path);
    } catch (err) {
      sendOSError(ctx, 'glob', err, path);
      return;
    }
    ctx.sendStatus('files', files);
    ctx.sendStatus('rc', 0);
  },
});
