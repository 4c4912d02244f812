"""A stand-in for the 'buildbot-www' package, for tests only.

Debian packages Buildbot without buildbot-www (the JavaScript UI), and
buildbot.www.service refuses to start the web server (and so the REST API)
unless a www plugin named 'base' is registered under the 'buildbot.www'
entry point group. This module provides that plugin: an Application whose
VERSION and static/ folder sit next to this file. The UI is a placeholder
page; /api/v2, /ws, /sse and /auth are added by buildbot itself.
"""
from buildbot.www.plugin import Application

ep = Application(__name__, "Tether test stand-in for buildbot-www (REST API only)")
