#!/usr/bin/env bash
# gantry's main job, end to end on this machine: set-up (deploy/bootstrap.sh: .venv with torch,
# the release build), then deploy/local/pipeline.sh: a dataset packed into storage, a
# coordinator and two workers, a data-parallel conditional job submitted over gRPC and followed
# live, then images per class and the label-swap grid. A second run reuses what exists.
#   STORAGE=s3://bucket/prefix  the dataset, the job records and the run in an S3 API (with the
#                               usual AWS_* variables; gs:// and az:// work too)
#   INPUT=/path/to/celeba       a real CelebA download, packed at 64x64 and trained with the
#                               book's settings (deploy/local/book-job.toml)
# pipeline.sh lists every setting.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
cd "$GANTRY_ROOT"
deploy/bootstrap.sh
exec deploy/local/pipeline.sh "$@"
