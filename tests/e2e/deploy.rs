//! The deployment files, checked without a Docker engine: the compose file
//! is valid for Debian's `docker-compose` (it resolves every variable and
//! the anchors), every variable it hands kiln is one kiln reads, and every
//! variable `.env.example` documents is read too.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `*.rs` file under `dir`, read.
fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).expect("read dir").filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).expect("read source"));
        }
    }
}

/// What kiln's own code reads: the binary and the crates, not the tests.
fn kiln_sources() -> String {
    let mut text = String::new();
    for dir in ["src", "crates", "workers", "apps"] {
        sources(&root().join(dir), &mut text);
    }
    text
}

/// The variable names of the `environment:` block that starts at `line`.
fn block_names(lines: &[&str], start: usize) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = indent(lines[start]);
    lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > base)
        .filter_map(|l| l.trim().split_once(':').map(|(name, _)| name.trim().to_owned()))
        .filter(|name| {
            !name.starts_with("<<")
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

#[test]
fn every_variable_the_compose_file_passes_kiln_is_one_kiln_reads() {
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).expect("compose file");
    let lines: Vec<&str> = compose.lines().collect();
    let kiln_blocks: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("environment:"))
        .map(|(i, _)| i)
        // The kiln anchor and the blocks that merge it (api, worker).
        .filter(|&i| {
            lines[i].contains("&kiln-environment")
                || lines.get(i + 1).is_some_and(|n| n.contains("<<: *kiln-environment"))
        })
        .collect();
    assert!(
        kiln_blocks.len() >= 2,
        "the kiln environment anchor and the api's block"
    );
    let names: Vec<String> = kiln_blocks.iter().flat_map(|&i| block_names(&lines, i)).collect();
    assert!(
        names.contains(&"DATABASE_URL".to_owned()) && names.contains(&"KILN_ADDR".to_owned()),
        "{names:?}"
    );
    let code = kiln_sources();
    let unread: Vec<&String> = names
        .iter()
        .filter(|name| !code.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        unread.is_empty(),
        "the compose file passes variables kiln never reads: {unread:?}"
    );
}

#[test]
fn every_variable_env_example_documents_is_one_kiln_reads() {
    let example = std::fs::read_to_string(root().join(".env.example")).expect(".env.example");
    let code = kiln_sources();
    // Variables for the compose file's own services, not for kiln.
    let for_services = [
        "POSTGRES_PASSWORD",
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
        "MINIO_PORT",
        "KILN_PORT",
        "COMPOSE_PROJECT_NAME",
        "RUST_LOG",
        // The task host example's: its image, directory and key.
        "APP_IMAGE",
        "APP_DIR",
        "TRIGGER_SECRET_KEY",
    ];
    let names: Vec<&str> = example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim()))
        .filter(|name| !name.is_empty())
        .collect();
    assert!(names.len() > 20, "{names:?}");
    let unread: Vec<&&str> = names
        .iter()
        .filter(|name| !for_services.contains(name) && !code.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        unread.is_empty(),
        ".env.example documents variables kiln never reads: {unread:?}"
    );
}

#[test]
fn docker_compose_accepts_the_compose_file() {
    let dir = crate::helpers::temp_dir("compose");
    std::fs::copy(root().join("docker-compose.yml"), dir.join("docker-compose.yml")).expect("copy compose");
    let example = std::fs::read_to_string(root().join(".env.example")).expect(".env.example");
    let env = example.replace("KILN_SECRET=\n", "KILN_SECRET=a-secret-for-the-check-only-0123456789\n");
    std::fs::write(dir.join(".env"), env).expect("write .env");
    let output = Command::new("docker-compose")
        .arg("-f")
        .arg(dir.join("docker-compose.yml"))
        .args(["config"])
        .current_dir(&dir)
        .output()
        .expect("docker-compose (scripts/test installs Debian's docker-compose)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "docker-compose config: {stderr}");
    let resolved = String::from_utf8_lossy(&output.stdout);
    for service in ["postgres:", "redis:", "minio:", "api:", "worker:"] {
        assert!(
            resolved.contains(&format!("  {service}")),
            "service {service} in {resolved}"
        );
    }
    assert!(resolved.contains("--appendonly"), "Redis keeps an append-only file");
    assert!(resolved.contains("127.0.0.1"), "ports bound to the loopback address");
    assert!(resolved.contains("DATABASE_URL: postgres://kiln:"), "{resolved}");
}

#[test]
fn the_dockerfile_builds_in_stages_and_runs_kiln_as_a_user_with_its_renderers() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split(" AS ").nth(1).unwrap_or("").trim())
        .collect();
    assert!(stages.len() >= 3, "build, pdfium and runtime stages: {stages:?}");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY --from=")) {
        let stage = line["COPY --from=".len()..].split_whitespace().next().unwrap_or("");
        assert!(stages.contains(&stage), "COPY from an unknown stage {stage:?}");
    }
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap_or("");
    assert!(
        runtime.contains("\nUSER kiln"),
        "the runtime stage runs as the kiln user"
    );
    assert!(runtime.contains("useradd --system"), "a system user without a login");
    for package in [
        "libreoffice-writer-nogui",
        "libreoffice-calc-nogui",
        "libreoffice-impress-nogui",
        "libreoffice-draw-nogui",
        "python3-uno",
        "ffmpeg",
        "fonts-",
    ] {
        assert!(runtime.contains(package), "the runtime image installs {package}");
    }
    assert!(runtime.contains("PDFIUM_LIB_PATH=/opt/pdfium/lib/libpdfium.so"));
    assert!(
        dockerfile.contains("install-pdfium"),
        "libpdfium comes from the pinned wheel"
    );
    let install = std::fs::read_to_string(root().join("scripts/install-pdfium")).expect("install-pdfium");
    assert!(
        install.contains("PYPDFIUM2_VERSION=") && install.contains("WHEEL_SHA256="),
        "pinned by version and hash"
    );
}

/// The compose file that joins kiln to Supermark's own stack resolves on
/// top of a Supermark compose file (its services as Supermark declares
/// them), points Supermark at kiln, and passes kiln only variables it reads.
#[test]
fn the_supermark_compose_file_joins_supermarks_stack() {
    let example = root().join("examples/supermark/docker-compose.kiln.yml");
    let text = std::fs::read_to_string(&example).expect("example compose file");
    let lines: Vec<&str> = text.lines().collect();
    let anchor = lines
        .iter()
        .position(|l| l.contains("&kiln-environment"))
        .expect("the kiln environment anchor");
    let names = block_names(&lines, anchor);
    assert!(names.contains(&"POSTGRES_PRISMA_URL".to_owned()), "{names:?}");
    let code = kiln_sources();
    let unread: Vec<&String> = names.iter().filter(|n| !code.contains(&format!("\"{n}\""))).collect();
    assert!(unread.is_empty(), "passed to kiln but never read: {unread:?}");

    let dir = crate::helpers::temp_dir("supermark-compose");
    // Supermark's own compose services, as its docker-compose.yml has them.
    std::fs::write(
        dir.join("docker-compose.yml"),
        r#"
services:
  postgres:
    image: postgres:16-alpine
    environment:
      POSTGRES_USER: supermark
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-supermark}
      POSTGRES_DB: supermark
  minio:
    image: minio/minio
    profiles: ["with-minio"]
  supermark:
    image: supermark:latest
    env_file: .env
    environment:
      NEXTAUTH_URL: ${NEXTAUTH_URL:-http://localhost:3000}
      POSTGRES_PRISMA_URL: ${POSTGRES_PRISMA_URL}
      TRIGGER_SECRET_KEY: ${TRIGGER_SECRET_KEY:-}
      TRIGGER_API_URL: ${TRIGGER_API_URL:-https://api.trigger.dev}
"#,
    )
    .expect("base compose");
    std::fs::copy(&example, dir.join("docker-compose.kiln.yml")).expect("copy");
    std::fs::write(
        dir.join(".env"),
        "POSTGRES_PRISMA_URL=postgresql://supermark:supermark@postgres:5432/supermark?schema=public&pgbouncer=true\n\
         NEXT_PRIVATE_UPLOAD_ACCESS_KEY_ID=minio\nNEXT_PRIVATE_UPLOAD_SECRET_ACCESS_KEY=minio-secret\n\
         KILN_SECRET=a-secret-for-the-check-only-0123456789\nKILN_TRIGGER_SECRET_KEY=tr_prod_check\n",
    )
    .expect(".env");
    let output = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "-f", "docker-compose.kiln.yml", "config"])
        .current_dir(&dir)
        .output()
        .expect("docker-compose");
    let resolved = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for service in [
        "kiln-api:",
        "kiln-worker:",
        "kiln-postgres:",
        "kiln-redis:",
        "supermark:",
    ] {
        assert!(resolved.contains(&format!("  {service}")), "{service} in {resolved}");
    }
    assert!(resolved.contains("TRIGGER_API_URL: http://kiln-api:8080"), "{resolved}");
    assert!(resolved.contains("TRIGGER_SECRET_KEY: tr_prod_check"), "{resolved}");
    assert!(
        resolved.contains("POSTGRES_PRISMA_URL: postgresql://supermark:supermark@postgres:5432/supermark"),
        "kiln reads Supermark's database: {resolved}"
    );
    assert!(
        resolved.contains("KILN_SUPERMARK_APP_URL: http://supermark:3000"),
        "{resolved}"
    );
}
