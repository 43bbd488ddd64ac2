# Sourced by the scripts: sets $py to the Python that runs headprobe ($PYTHON when set,
# else the install's .venv, else python3). Run from the repository root.
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3; fi
