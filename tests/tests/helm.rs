//! The Helm chart lints, renders and validates offline: `helm/validate.sh` runs the real
//! `helm` (v4, from the PyPI wheel that bundles it) and validates every rendered manifest
//! against the Kubernetes schemas with `kubernetes-validate` in strict mode, for the default,
//! minimal and production values; it also checks that bad values are rejected.

use kms_tests::observability::repo_root;
use std::process::Command;

#[test]
fn chart_lints_renders_and_validates() {
    let out = Command::new("bash")
        .arg(repo_root().join("helm/validate.sh"))
        .current_dir(repo_root())
        .output()
        .expect("run helm/validate.sh");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm/validate.sh failed:\n{text}");
    assert!(text.contains("== OK"), "{text}");
}
