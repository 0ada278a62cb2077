#!/usr/bin/env bash
# Upload training/ as code/training-source.tar.gz to the stack's data bucket: the SageMaker script-mode
# source (sagemaker_submit_directory) that the Train and CreateModel states point at.
#
# Usage: infra/upload_training_source.sh [STACK_NAME]      (default: stepml-dev)
# Credentials and region come from the normal AWS CLI chain (AWS_PROFILE, AWS_REGION, ...).
# AWS_CLI=awslocal uses LocalStack instead (the LocalStack ready hook does that).
set -euo pipefail

stack="${1:-stepml-dev}"
aws_cli="${AWS_CLI:-aws}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ ! -f "$root/training/train.py" ]]; then
  echo "error: $root/training/train.py not found; run this from a stepml checkout" >&2
  exit 1
fi

bucket="$("$aws_cli" cloudformation describe-stacks --stack-name "$stack" \
  --query "Stacks[0].Outputs[?OutputKey=='DataBucketName'].OutputValue" --output text)"
if [[ -z "$bucket" || "$bucket" == "None" ]]; then
  echo "error: stack $stack has no DataBucketName output (is it deployed in this region?)" >&2
  exit 1
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
# train.py and inference.py must sit at the top of the archive: the container runs sagemaker_program
# (train.py) and SAGEMAKER_PROGRAM (inference.py) from the extracted directory's root.
tar --exclude='__pycache__' --exclude='*.pyc' -czf "$workdir/training-source.tar.gz" -C "$root/training" .
"$aws_cli" s3 cp "$workdir/training-source.tar.gz" "s3://$bucket/code/training-source.tar.gz"
echo "uploaded s3://$bucket/code/training-source.tar.gz"
