#!/usr/bin/env bash
# The main job, the test suite and `compare.py --quick` on each PyTorch version given, each in a fresh virtual environment
# (under a temporary directory, removed afterwards): one summary line per version, full logs kept.
#
#   benchmarks/compat.sh [TORCH_VERSION ...]      default: 2.4.1 2.11.0 2.14.1 2.15.0
#
# Each venv gets torch==VERSION, its torchvision (the table below, else whichever pip resolves beside
# that torch), `pip install -e ".[dev]"` and, for torch < 2.6, transformers < 5 (transformers 5 needs
# torch 2.6 and turns its PyTorch side off below that). PYTHON picks the interpreter (default python3);
# PYTEST_ARGS replaces the suite's arguments (default: -q -p no:cacheprovider); LOG_DIR keeps the logs.
# pip's own settings apply (a constraints file capping torch must be lifted for newer versions:
# PIP_CONSTRAINT=/dev/null). Results: benchmarks/results/compat.md. Exit status 1 if any version failed.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
read -r -a pytest_args <<< "${PYTEST_ARGS:--q -p no:cacheprovider}"
versions=("$@")
[ ${#versions[@]} -eq 0 ] && versions=(2.4.1 2.11.0 2.14.1 2.15.0)
log_dir=${LOG_DIR:-$(mktemp -d -t torch_flops_compat_logs.XXXXXX)}
mkdir -p "$log_dir"

torchvision_for() {
    case $1 in
        2.4.1) echo 0.19.1 ;;
        2.11.0) echo 0.26.0 ;;
        2.14.1) echo 0.29.1 ;;
        2.15.0) echo 0.29.2 ;;  # no torchvision release names torch 2.15 yet; 0.29.2 installs and runs beside it
        *) echo "" ;;
    esac
}

older_than() {  # older_than A B: version A sorts before version B
    [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$1" ]
}

status=0
summary=()
work=""
trap 'rm -rf "$work"' EXIT  # a venv holds a full torch build (several GB): removed however the run ends
for version in "${versions[@]}"; do
    work=$(mktemp -d -t torch_flops_compat.XXXXXX)
    venv=$work/venv
    log=$log_dir/torch-$version.log
    requirements=("torch==$version")
    torchvision=$(torchvision_for "$version")
    requirements+=("torchvision${torchvision:+==$torchvision}")
    older_than "$version" 2.6 && requirements+=("transformers<5")
    echo "== torch $version: ${requirements[*]} (log: $log)"
    line="torch $version:"
    if ! { "$python" -m venv "$venv" && "$venv/bin/pip" install -q "${requirements[@]}" -e "$root[dev]"; } > "$log" 2>&1; then
        line+=" install failed (see $log)"
        status=1
    else
        installed=$("$venv/bin/python" -c 'import importlib.metadata as m
print(" ".join(f"{p} {m.version(p)}" for p in ("torch", "torchvision", "transformers", "timm")))')
        line="$installed:"
        (cd "$root" && "$venv/bin/torch-flops" resnet50 --depth 1) > "$work/main_job.txt" 2>> "$log"
        main_status=$?
        cat "$work/main_job.txt" >> "$log"
        main_job=$(grep '^total:' "$work/main_job.txt" | tail -n 1)
        if [ "$main_status" -eq 0 ] && [[ $main_job == total:* ]]; then
            line+=" main job ok (${main_job#total: });"
        else
            line+=" main job FAILED;"
            status=1
        fi
        (cd "$root" && "$venv/bin/python" -m pytest "${pytest_args[@]}") >> "$log" 2>&1
        suite=$?
        counts=$(grep -E '^=* *[0-9]+ (passed|failed|errors?|skipped)' "$log" | tail -n 1 | sed -E 's/^=+ //; s/ in [0-9.]+s.*$//')
        line+=" suite ${counts:-no summary} (exit $suite);"
        [ "$suite" -eq 0 ] || status=1
        if (cd "$root" && "$venv/bin/python" compare.py --quick) >> "$log" 2>&1; then
            line+=" compare.py --quick ok"
        else
            line+=" compare.py --quick FAILED"
            status=1
        fi
    fi
    rm -rf "$work"
    summary+=("$line")
    echo "$line"
done

echo
echo "== summary (logs in $log_dir)"
printf '%s\n' "${summary[@]}"
exit $status
