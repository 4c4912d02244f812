/**
 * 'rmfile': buildbot_worker/commands/fs.py RemoveFile.
 *
 * Arguments: path (relative to io.basedir). os.remove(path): unlinks a file
 * or symlink, rc 0. Errors: header "rmfile: <strerror>: <path>", rc = errno
 * (2 missing, 21 Is a directory).
 */
import * as fs from 'fs';
import { defineCommand, sendOSError } from './base';

export const rmfile = defineCommand<{ path: string }>({
  name: 'rmfile',
  className: 'RemoveFile',
  requiredArgs: ['path'],
  setup: (args) => ({ path: args.path as string }),
  async start({ path }, _io, ctx) {
    try {
      fs.unlinkSync(path);
    } catch (err) {
      sendOSError(ctx, 'rmfile', err, path);
      return;
    }
    ctx.sendStatus('rc', 0);
  },
});
