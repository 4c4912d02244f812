# Tether's end-to-end Buildbot build: every ordinary step a worker must support.
#
# exec'd into a generated master.cfg by test/helpers/buildbot.ts (option
# `include`); test/helpers/buildbot-e2e.ts prepares the files it uses and
# passes their paths in TEST['e2e']:
#   repo_url        file:// URL of a bare git repo (hello.txt, README)
#   download_src    file on the master for FileDownload
#   string_text     text for StringDownload
#   upload_dir      directory on the master for the uploads
#   interrupt_pidfile  where the 'interrupt' builder's command writes its pid
#
# Builders (see test/helpers/buildbot-e2e.ts):
#   tether_e2e_factory(E)        the main build; it completes (with failures)
#   tether_interrupt_factory(E)  a build the test stops while `sleep 600` runs
#
# Steps expected to fail have haltOnFailure=False so the build goes on.

from buildbot.plugins import steps
from buildbot.plugins import util
from buildbot.process.results import SUCCESS
from buildbot.process.results import WARNINGS

E2E_UTF8_TEXT = 'grüße ✓ 日本'
E2E_STDIN_TEXT = 'first line\nzweite Zeile ✓\nno newline at the end'
# 65536 lines of 64 bytes: 4 MiB of stdout
E2E_BIG_LINES = 65536
E2E_BIG_FORMAT = 'line %07g abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN'
E2E_STAMP = '2001-02-03 04:05:06'


def tether_e2e_factory(E):
    f = util.BuildFactory()
    up = E['upload_dir'].rstrip('/')

    def shell(name, command, **kw):
        f.addStep(steps.ShellCommand(name=name, command=command, **kw))

    # -- source checkout (clobber: rmdir + git clone) and a property from it
    f.addStep(steps.Git(name='git', repourl=E['repo_url'], mode='full', method='clobber',
                        workdir='build'))
    shell('checkout', ['cat', 'hello.txt'])

    # -- plain output, both streams, non-ASCII, stdin, stderr dropped, decodeRC
    shell('stdout-stderr', 'echo out1; echo err1 >&2; echo out2; echo err2 >&2')
    shell('utf8', ['sh', '-c', 'printf "%s\\n" "$1"; printf "stderr: %s\\n" "$1" >&2',
                   'sh', E2E_UTF8_TEXT])
    shell('stdin', ['sh', '-c', 'cat; echo; echo "[end of stdin]"'],
          initialStdin=E2E_STDIN_TEXT)
    shell('no-stderr', 'echo visible; echo hidden >&2', want_stderr=False)
    shell('decode-rc', 'echo exiting with 3; exit 3', decodeRC={0: SUCCESS, 3: WARNINGS})
    shell('exit-1', 'echo failing on purpose; exit 1', haltOnFailure=False)
    shell('no-newline', ['printf', 'partial line without newline'])

    # -- killed commands: no output for longer than timeout; running longer than maxTime
    shell('timeout', 'echo before the silence; sleep 60; echo not reached',
          timeout=2, haltOnFailure=False)
    shell('max-time', 'echo tick; sleep 60; echo not reached',
          maxTime=3, timeout=100, haltOnFailure=False)

    # -- a file watched as a logfile
    shell('logfiles', 'for i in 1 2 3; do echo "entry $i ✓" >> app.log; sleep 0.2; done; '
          'echo wrote app.log', logfiles={'app': 'app.log'})

    # -- 4 MiB of output
    shell('big-log', ['seq', '-f', E2E_BIG_FORMAT, '1', str(E2E_BIG_LINES)])

    # -- downloads (master -> worker)
    f.addStep(steps.FileDownload(name='file-download', mastersrc=E['download_src'],
                                 workerdest='downloaded.bin', mode=0o640))
    shell('check-download', 'sha256sum downloaded.bin; wc -c < downloaded.bin; '
          'stat -c %a downloaded.bin')
    f.addStep(steps.StringDownload(E['string_text'], name='string-download',
                                   workerdest='sub/dir/string.txt'))
    shell('check-string-download', ['cat', 'sub/dir/string.txt'])

    # -- directory commands (paths relative to the builder's directory)
    f.addStep(steps.MakeDirectory(name='mkdir', dir='build/made/deeper'))
    shell('fill-dir', 'echo content > made/deeper/file.txt')
    f.addStep(steps.CopyDirectory(name='cpdir', src='build/made', dest='build/made-copy'))
    f.addStep(steps.FileExists(name='file-exists', file='build/made-copy/deeper/file.txt'))
    f.addStep(steps.RemoveDirectory(name='rmdir', dir='build/made'))
    f.addStep(steps.FileExists(name='file-missing', file='build/made/deeper/file.txt',
                               haltOnFailure=False, flunkOnFailure=False))
    shell('check-dirs', 'test ! -e made && cat made-copy/deeper/file.txt')

    # -- properties from commands
    f.addStep(steps.SetPropertyFromCommand(
        name='set-property', property='from_command',
        command=['sh', '-c', 'printf "%s\\n" "$1"', 'sh', 'value ✓ with spaces']))
    f.addStep(steps.SetPropertyFromCommand(name='set-property-rev', property='head_revision',
                                           command=['git', 'rev-parse', 'HEAD']))

    # -- uploads (worker -> master)
    shell('make-uploads',
          'set -e; seq 1 200000 > numbers.txt; '
          'mkdir -p tree/a/b tree/empty; printf "x\\n" > tree/a/b/x.txt; '
          'printf "grüße\\n" > tree/y.txt; printf "m1\\n" > m1.txt; printf "m2\\n" > m2.txt; '
          f'echo stamped > stamped.txt; touch -d "{E2E_STAMP}" stamped.txt')
    f.addStep(steps.FileUpload(name='file-upload', workersrc='downloaded.bin',
                               masterdest=f'{up}/roundtrip.bin'))
    f.addStep(steps.FileUpload(name='file-upload-big', workersrc='numbers.txt',
                               masterdest=f'{up}/numbers.txt'))
    f.addStep(steps.FileUpload(name='file-upload-keepstamp', workersrc='stamped.txt',
                               masterdest=f'{up}/stamped.txt', keepstamp=True))
    f.addStep(steps.DirectoryUpload(name='directory-upload', workersrc='tree',
                                    masterdest=f'{up}/tree'))
    f.addStep(steps.MultipleFileUpload(name='multiple-file-upload',
                                       workersrcs=['m1.txt', 'm2.txt', 'tree'],
                                       masterdest=f'{up}/multi'))
    shell('done', ['echo', 'end of build'])
    return f


def tether_interrupt_factory(E):
    f = util.BuildFactory()
    f.addStep(steps.ShellCommand(
        name='sleeper',
        command=['sh', '-c', 'echo $$ > "$1"; echo started; exec sleep 600', 'sh',
                 E['interrupt_pidfile']]))
    f.addStep(steps.ShellCommand(name='after-sleeper', command=['echo', 'not reached']))
    return f
