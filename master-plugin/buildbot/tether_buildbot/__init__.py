"""Tether's Buildbot master plugin.

In master.cfg:

    sys.path.insert(0, '<checkout>/master-plugin/buildbot')
    from tether_buildbot import TetherService
    c['services'].append(TetherService(listen=['tcp://0.0.0.0:9991']))

Importing this package also fixes Buildbot's msgpack worker protocol so that
file downloads to msgpack workers (tether-master is one) carry their data; see
msgpack_fix. A master that only runs plain buildbot-worker over msgpack can
load the same fix with:

    from tether_buildbot import fix_msgpack_read_file
    fix_msgpack_read_file()
"""

from .msgpack_fix import fix_msgpack
from .msgpack_fix import fix_msgpack_read_file
from .msgpack_fix import fix_msgpack_upload_utime
from .service import MSGPACK_PROTOCOL
from .service import TetherService

fix_msgpack()

__all__ = ['TetherService', 'fix_msgpack', 'fix_msgpack_read_file', 'fix_msgpack_upload_utime',
           'MSGPACK_PROTOCOL']
