"""The paper-size rehearsal: the paper config's workflow on the CPU, at the paper's sizes, with every count shrunk.

:mod:`texad.rehearsal.switches` holds the two test-only switches it needs; :mod:`texad.rehearsal.workspace` builds
its data, weights and config overlay; :mod:`texad.rehearsal.run` runs and checks it (``texad rehearse``,
``make rehearse``).
"""
