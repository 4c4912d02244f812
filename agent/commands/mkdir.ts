/**
 * 'mkdir': buildbot_worker/commands/fs.py MakeDirectory.
 *
 * Arguments: paths (list; or Buildbot's dir, a string or list, relative to
 * io.basedir). Each path that is not already a directory is created with its
 * parents (os.makedirs). The first failure stops the command with header
 * "mkdir: <strerror>: <path>" and rc = errno (e.g. 17 File exists when a
 * file is in the way, 20 Not a directory when a parent is a file);
 * otherwise rc 0.
 */
import { defineCommand, sendOSError } from './base';
import { isDir, makedirs } from './paths';

export const mkdir = defineCommand<{ paths: string[] }>({
  name: 'mkdir',
  className: 'MakeDirectory',
  requiredArgs: ['paths'],
  setup: (args) => ({ paths: args.paths as string[] }),
  async start({ paths }, _io, ctx) {
    for (const dirname of paths) {
      try {
        if (!isDir(dirname)) makedirs(dirname);
      } catch (err) {
        sendOSError(ctx, 'mkdir', err, dirname);
        return;
      }
    }
    ctx.sendStatus('rc', 0);
  },
});
