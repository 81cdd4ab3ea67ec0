"""Every command the README shows is run by a test or by CI (issue 25), and what it names exists.

Each command of the README's ``bash`` blocks must be listed in :data:`RUN_BY` with the test (or CI
step) that runs it; the test named must exist. The cheap ones run here: ``nni-xfer check``, the
CPU-only install switch (the real line of ``scripts/setup.sh`` with ``python`` recorded instead of
run), the Python API block (mock evaluator), the shell scripts' syntax. The others run in
``tests/integration/test_portal_browser.py`` (``nni-xfer run`` on each quick example, the
quickstart as it is) and in CI (``.ci/run`` runs ``bash scripts/test.sh``). The method scripts
``examples/*/quick.sh`` take 11-12 minutes each: CI checks their syntax, their subcommands and
their configs (``tests/unit/test_examples.py``), not a whole run.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / 'README.md'
METHOD_DOCS = [ROOT / 'docs' / f'{m}.md' for m in ('eas', 'modulenet', 'nao', 'xfernas', 'eatnas')]

pytestmark = pytest.mark.timeout(300)

BROWSER = 'tests/integration/test_portal_browser.py::test_hyper_parameter_view_is_readable'
#: README command -> what runs it (``path::test``; ``ci:`` a CI step; ``here:`` a test of this file;
#: ``not run:`` and why, for a command no test may run — it must say so, and each is a gap to close)
RUN_BY = {
    'bash scripts/quickstart.sh': BROWSER + ' (simple_cnn: its nni-xfer run, as it is) + ci: scripts/setup.sh',
    'bash scripts/test.sh': 'ci: .ci/run',
    'TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/quickstart.sh':
        'here: test_cpu_only_torch_reaches_pip',
    'nni-xfer run examples/eas/quick_digits.yml': BROWSER + ' (eas_plain_cnn, mock evaluator, 3 trials)',
    'nni-xfer run examples/eatnas/quick_digits.yml': BROWSER + ' (mbv2_blocks, mock evaluator, 3 trials)',
    'nni-xfer run examples/nao/quick_digits.yml': BROWSER + ' (nasnet_cells, mock evaluator, 3 trials)',
    'nni-xfer check examples/nao/cifar10.yml': 'here: test_check_commands_pass',
    'bash examples/modulenet/quick.sh': 'here: test_scripts_are_valid (syntax, subcommands, configs)',
    'bash examples/eatnas/quick.sh': 'here: test_scripts_are_valid (syntax, subcommands, configs)',
    'bash examples/xfernas/quick.sh': 'here: test_scripts_are_valid (syntax, subcommands, configs)',
    # Sharing knowledge in a team (PostgreSQL)
    'docker run -d --name nni-xfer-pg -p 127.0.0.1:5432:5432 -e POSTGRES_USER=nnixfer -e POSTGRES_PASSWORD=change-me '
    '-e POSTGRES_DB=nnixfer postgres:16':
        "not run: needs Docker; CI starts Debian's postgresql instead (.ci/run, scripts/pg_throwaway.sh), "
        "the README's other way",
    "echo 'localhost:5432:nnixfer:nnixfer:change-me' >> ~/.pgpass && chmod 600 ~/.pgpass":
        "not run: it writes the user's ~/.pgpass; CI hands libpq the password in PGPASSWORD (.ci/run)",
    'nni-xfer store copy ~/.nni-xfer/store.db postgresql://nnixfer@localhost:5432/nnixfer':
        'here: test_store_copy_command',
}


def readme_commands(text: str | None = None) -> list[str]:
    """The commands of the README's ``bash`` blocks: one per line (continuations joined), comments cut."""
    text = README.read_text() if text is None else text
    out = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            cmd = re.sub(r'\s+#.*$', '', line).strip()
            if cmd and not cmd.startswith('#'):
                out.append(' '.join(cmd.split()))
    return out


def test_every_readme_command_is_run_somewhere():
    commands = readme_commands()
    assert commands, 'no bash block in README.md'
    missing = [c for c in commands if c not in RUN_BY]
    assert not missing, f'README commands nothing runs (add a test and list it in RUN_BY): {missing}'
    for cmd in set(commands):
        where = RUN_BY[cmd]
        if where.startswith('not run:'):
            assert len(where) > len('not run: ') + 10, f'{cmd}: say why it is not run'
            continue
        if where.startswith('ci:'):
            continue
        if where.startswith('here:'):
            name = where.split()[1]
            assert name in globals(), where
            continue
        path, test = where.split()[0].split('::')
        assert re.search(rf'^def {test}\(', (ROOT / path).read_text(), re.M), where
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'bash scripts/test.sh' in ci


def test_quickstart_script_runs_the_quickstart_config():
    """``scripts/quickstart.sh`` is set-up plus the ``nni-xfer run`` the browser test runs."""
    body = (ROOT / 'scripts' / 'quickstart.sh').read_text()
    assert 'bash scripts/setup.sh' in body
    assert re.search(r'^nni-xfer run examples/quickstart/exp\.yml ', body, re.M), body
    from tests.integration.test_portal_browser import SPACES
    assert SPACES['simple_cnn'] == ('examples/quickstart/exp.yml', None)   # unchanged: real training
    for cmd in readme_commands():
        if cmd.startswith('nni-xfer run '):
            assert cmd.split()[2] in {example for example, _ in SPACES.values()}, cmd


def test_check_commands_pass(capsys):
    from nni_xfer.cli import main
    checks = [c for c in readme_commands() if c.startswith('nni-xfer check ')]
    assert checks
    for cmd in checks:
        assert main(cmd.split()[1:]) == 0, capsys.readouterr().out


def test_cpu_only_torch_reaches_pip(tmp_path):
    """The torch line of ``scripts/setup.sh``, run by bash with ``python`` recorded (torch absent)."""
    lines = (ROOT / 'scripts' / 'setup.sh').read_text().replace('\\\n', ' ').splitlines()
    (line,) = [ln for ln in lines if ln.startswith("python -c 'import torch")]
    script = tmp_path / 'torch_line.sh'
    script.write_text('python() { if [ "$1" = -c ]; then return 1; fi; echo "python $*"; }\n' + line + '\n')
    for env, index in (({'TORCH_INDEX_URL': 'https://download.pytorch.org/whl/cpu'},
                        ' --index-url https://download.pytorch.org/whl/cpu'), ({}, '')):
        e = {k: v for k, v in os.environ.items() if k != 'TORCH_INDEX_URL'}
        r = subprocess.run(['bash', '-u', str(script)], env={**e, **env}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f'python -m pip install -q torch==2.14.1 torchvision==0.29.1{index}', r.stdout
    readme = README.read_text()
    assert 'TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/quickstart.sh' in readme
    assert 'torch==2.14.1' in readme and 'torchvision==0.29.1' in readme


@pytest.mark.parametrize('script', sorted({c.split()[-1] for c in readme_commands() if c.split()[-1].endswith('.sh')}))
def test_scripts_are_valid(script):
    """Shell syntax, every ``nni-xfer`` subcommand a script calls exists, every config it names is there
    (``tests/unit/test_examples.py`` checks each example config)."""
    path = ROOT / script
    r = subprocess.run(['bash', '-n', str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from nni_xfer.cli import build_parser
    parser = build_parser()
    for sub in re.findall(r'^\s*nni-xfer ([a-z]+(?: [a-z]+)?)', path.read_text(), re.M):
        words = sub.split()
        try:
            parser.parse_args(words + ['--help'])
        except SystemExit as exc:
            assert exc.code == 0, f'{script}: nni-xfer {sub}'
    for ref in re.findall(r'(examples/[\w/.-]+\.ya?ml)', path.read_text()):
        assert (ROOT / ref).exists(), f'{script}: {ref}'


def test_paths_and_subcommands_named_in_the_docs_exist():
    """Every repository path and ``nni-xfer`` subcommand the README and the method pages name."""
    from nni_xfer.cli import build_parser
    choices = next(a for a in build_parser()._actions if a.__class__.__name__ == '_SubParsersAction').choices
    for doc in [README] + METHOD_DOCS:
        text = doc.read_text()
        for ref in set(re.findall(r'(?<![\w/.$<-])((?:examples|scripts|benchmarks|docs|tests|nni_xfer|strategies|'
                                  r'search_spaces)/[\w/.-]*\w)', text)):
            if '<' in ref or '*' in ref:
                continue
            assert (ROOT / ref).exists() or (ROOT / (ref + '.py')).exists(), f'{doc.name}: {ref}'
        for sub in set(re.findall(r'`nni-xfer ([a-z][a-z-]*)', text)):
            assert sub in choices, f'{doc.name}: nni-xfer {sub}'


@pytest.mark.slow
def test_python_api_block_runs_quietly_under_nnis_id(tmp_path):
    """The README's Python block (mock evaluator, free port): no NNI noise, stored under NNI's id."""
    (block,) = re.findall(r'```python\n(.*?)```', README.read_text(), re.S)
    code = block.replace("evaluator='train', evaluator_args={'epochs': 3}", "evaluator='mock', evaluator_args={}")
    code = code.replace('exp.run(port=8081)', 'exp.run(port=0)')
    assert "evaluator='mock'" in code and 'port=0' in code
    code += '\nprint("ids", exp.id, strategy.experiment_id)\n'
    env = dict(os.environ, NNI_XFER_HOME=str(tmp_path / 'home'))
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    nni_id, store_id = re.search(r'^ids (\S+) (\S+)$', r.stdout, re.M).groups()
    assert nni_id == store_id
    for noise in ('will be ignored for sequential execution engine', 'pkg_resources is deprecated',
                  'is found to be not a nn.Module'):
        assert noise not in out, out
    from nni_xfer.store import KnowledgeStore
    evs = KnowledgeStore(tmp_path / 'home' / 'store.db').evaluations(experiment_id=nni_id)
    assert [e.status for e in evs] == ['SUCCEEDED'] * 3


def test_store_copy_command(tmp_path):
    """``nni-xfer store copy SOURCE DESTINATION`` as the README runs it, from a SQLite store into the CI's
    PostgreSQL server (``NNI_XFER_TEST_PG_URL``, a new database) or, without one, into another SQLite file."""
    from nni_xfer.cli import main
    from nni_xfer.store import KnowledgeStore
    src = tmp_path / 'store.db'
    s = KnowledgeStore(src)
    for i in range(3):
        s.record_proposal('mine', i, architecture={'w': i}, trial_id=f't{i}')
        s.record_result('mine', i, {'default': 0.5 + i / 10}, status='SUCCEEDED')
    s.close()
    sys.path.insert(0, str(ROOT / 'tests'))
    from store_backends import PG_ENV, drop_pg_database, new_pg_database
    name = None
    if os.environ.get(PG_ENV):
        dest, name = new_pg_database()
    else:
        dest = str(tmp_path / 'team.db')
    try:
        assert main(['store', 'copy', str(src), dest]) == 0
        assert [e.trial_id for e in KnowledgeStore(dest).evaluations(experiment_id='mine')] == ['t0', 't1', 't2']
        assert main(['store', 'copy', str(src), dest]) == 0   # again: nothing twice
        assert len(KnowledgeStore(dest).evaluations(experiment_id='mine')) == 3
    finally:
        if name:
            drop_pg_database(name)
