#!/usr/bin/env bash
# LocalStack "ready" hook (mounted at /etc/localstack/init/ready.d by docker-compose.yml): build the
# functions, deploy infra/template.yaml with Target=local (the SageMaker stand-in functions replace
# SageMaker, which LocalStack's free plans lack) and upload the training source.
#
# No SAM CLI is needed in the container: LocalStack's CloudFormation applies the SAM transform itself, and
# `aws cloudformation package` uploads CodeUri/ContentUri/DefinitionUri. What `sam build` would do is done
# here with pip: dependencies are installed for Lambda's python3.12 on x86_64 (--platform/--python-version,
# binary wheels only), whatever Python this container runs.
#
# The repository is mounted read-only at /opt/stepml; everything is built in a scratch copy.
set -euo pipefail

SRC="${STEPML_SOURCE:-/opt/stepml}"
BUILD="${STEPML_BUILD_DIR:-/tmp/stepml-build}"
STACK="${STEPML_STACK:-stepml-local}"
STAGE="${STEPML_STAGE:-local}"
ARTIFACTS="${STACK}-artifacts"

# Local targets cannot attach AWS's public Powertools and AWS SDK for pandas layers (other accounts), so
# their content goes into the shared layer instead, pinned like pyproject.toml.
LOCAL_EXTRAS=(
  "aws-lambda-powertools[tracer]==3.37.0"
  "pandas==3.1.1"
  "pyarrow==26.0.1"
)

log() { echo "[stepml deploy] $*"; }
fail() { echo "[stepml deploy] error: $*" >&2; exit 1; }

[[ -f "$SRC/infra/template.yaml" ]] || fail "$SRC/infra/template.yaml not found: is the repository mounted at $SRC?"
command -v awslocal >/dev/null || fail "awslocal is not on PATH in this image"

pip_for_lambda() {
  local target="$1"
  shift
  python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check \
    --platform manylinux2014_x86_64 --implementation cp --python-version 3.12 --only-binary=:all: \
    --upgrade --target "$target" "$@"
}

has_requirements() { grep -qvE '^[[:space:]]*(#|$)' "$1"; }

log "building in $BUILD"
rm -rf "$BUILD"
mkdir -p "$BUILD"
cp -R "$SRC/infra" "$SRC/statemachine" "$SRC/functions" "$BUILD/"
find "$BUILD" -name '__pycache__' -type d -prune -exec rm -rf {} +

# The shared layer: Lambda puts /opt/python on sys.path, so pipeline_core and its dependencies go there.
layer="$BUILD/functions/shared"
mkdir -p "$layer/python"
mv "$layer/pipeline_core" "$layer/python/"
pip_for_lambda "$layer/python" -r "$layer/requirements.txt" "${LOCAL_EXTRAS[@]}"

# Each function's own dependencies go next to its code: requirements.txt (what `sam build` installs for AWS)
# and requirements-local.txt (what only local targets need: scikit-learn for the SageMaker stand-in).
for requirements in "$BUILD"/functions/*/requirements.txt "$BUILD"/functions/*/requirements-local.txt; do
  dir="$(dirname "$requirements")"
  [[ "$dir" == "$layer" ]] && continue
  if has_requirements "$requirements"; then
    log "installing $(basename "$dir") $(basename "$requirements")"
    pip_for_lambda "$dir" -r "$requirements"
  fi
done

log "packaging"
awslocal s3 mb "s3://$ARTIFACTS" >/dev/null 2>&1 || true
awslocal cloudformation package \
  --template-file "$BUILD/infra/template.yaml" \
  --s3-bucket "$ARTIFACTS" \
  --output-template-file "$BUILD/packaged.yaml" >/dev/null

log "deploying stack $STACK (Target=local, Stage=$STAGE)"
awslocal cloudformation deploy \
  --template-file "$BUILD/packaged.yaml" \
  --stack-name "$STACK" \
  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
  --parameter-overrides Target=local "Stage=$STAGE" \
  --no-fail-on-empty-changeset

AWS_CLI=awslocal "$SRC/infra/upload_training_source.sh" "$STACK"

output() {
  awslocal cloudformation describe-stacks --stack-name "$STACK" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
log "ready: state machine $(output StateMachineArn)"
log "ready: upload data to s3://$(output DataBucketName)/incoming/ to start a run"
