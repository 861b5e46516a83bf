//! The catalog file: versioned JSON, replaced atomically under an exclusive file lock.
//!
//! Writers take `catalog.lock` (an advisory `flock`), read the current file, change it, write a
//! temporary file in the same directory, fsync it and rename it over `catalog.json`. Readers need
//! no lock: a rename is atomic, so they see the old or the new file, never a mix. A file that
//! cannot be parsed (or has a newer version) aborts every command that would write it, so it is
//! never overwritten.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::builtin::builtin_models;
use crate::error::CatalogError;
use crate::model::{LocalModel, ModelSpec};

/// Version written into new catalog files.
pub const CATALOG_VERSION: u32 = 1;

/// Contents of `catalog.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// File format version ([`CATALOG_VERSION`]).
    pub version: u32,
    /// User entries (`register`, `import`); an id here shadows a built-in with the same id.
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    /// Files present on this host, by model id (built-in or user).
    #[serde(default)]
    pub local: BTreeMap<String, LocalModel>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            version: CATALOG_VERSION,
            models: Vec::new(),
            local: BTreeMap::new(),
        }
    }
}

impl Catalog {
    /// Every known entry: user entries first shadowing built-ins, then the remaining built-ins,
    /// sorted by id. The flag says whether the entry is built-in.
    pub fn entries(&self) -> Vec<(ModelSpec, bool)> {
        let mut out: Vec<(ModelSpec, bool)> =
            self.models.iter().cloned().map(|m| (m, false)).collect();
        for b in builtin_models() {
            if !self.models.iter().any(|m| m.id == b.id) {
                out.push((b, true));
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        out
    }

    /// Look up an entry by id; the flag says whether it is built-in.
    pub fn get(&self, id: &str) -> Option<(ModelSpec, bool)> {
        if let Some(m) = self.models.iter().find(|m| m.id == id) {
            return Some((m.clone(), false));
        }
        builtin_models()
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| (m, true))
    }

    /// Add a user entry; fails if the id is taken (by a user or built-in entry) or invalid.
    pub fn add(&mut self, spec: ModelSpec) -> Result<(), CatalogError> {
        if !ModelSpec::valid_id(&spec.id) {
            return Err(CatalogError::InvalidId(spec.id));
        }
        if self.get(&spec.id).is_some() {
            return Err(CatalogError::AlreadyExists(spec.id));
        }
        self.models.push(spec);
        Ok(())
    }

    /// Remove a user entry and its local state (files are not touched).
    pub fn remove(&mut self, id: &str) -> Result<ModelSpec, CatalogError> {
        match self.models.iter().position(|m| m.id == id) {
            Some(i) => {
                self.local.remove(id);
                Ok(self.models.remove(i))
            }
            None if self.get(id).is_some() => Err(CatalogError::BuiltIn(id.to_string())),
            None => Err(CatalogError::NotFound(id.to_string())),
        }
    }
}

/// Reads and atomically rewrites `catalog.json`.
#[derive(Debug, Clone)]
pub struct CatalogStore {
    path: PathBuf,
    lock_path: PathBuf,
}

impl CatalogStore {
    /// A store for `path`, serialised through `lock_path`.
    pub fn new(path: impl Into<PathBuf>, lock_path: impl Into<PathBuf>) -> Self {
        CatalogStore {
            path: path.into(),
            lock_path: lock_path.into(),
        }
    }

    /// Path of the catalog file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the catalog; a missing file is an empty catalog.
    pub fn load(&self) -> Result<Catalog, CatalogError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Catalog::default()),
            Err(e) => return Err(CatalogError::io("read", &self.path, e)),
        };
        parse_catalog(&self.path, &text)
    }

    /// Run `change` on the current catalog under the exclusive lock and write the result back
    /// atomically. Nothing is written if `change` fails or the current file is unreadable.
    pub fn update<T, E>(&self, change: impl FnOnce(&mut Catalog) -> Result<T, E>) -> Result<T, E>
    where
        E: From<CatalogError>,
    {
        let _lock = self.lock()?;
        let mut catalog = self.load()?;
        let out = change(&mut catalog)?;
        self.write_atomic(&catalog)?;
        Ok(out)
    }

    /// Take the exclusive writer lock (released when the returned file is dropped).
    fn lock(&self) -> Result<File, CatalogError> {
        if let Some(dir) = self.lock_path.parent() {
            fs::create_dir_all(dir).map_err(|e| CatalogError::io("create directory", dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| CatalogError::io("open lock file", &self.lock_path, e))?;
        file.lock_exclusive()
            .map_err(|e| CatalogError::io("lock", &self.lock_path, e))?;
        Ok(file)
    }

    fn write_atomic(&self, catalog: &Catalog) -> Result<(), CatalogError> {
        let mut text = serde_json::to_string_pretty(catalog).expect("catalog serialises");
        text.push('\n');
        write_file_atomic(&self.path, text.as_bytes())
    }
}

fn parse_catalog(path: &Path, text: &str) -> Result<Catalog, CatalogError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let unreadable = |reason: String| CatalogError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let v: VersionOnly = serde_json::from_str(text).map_err(|e| unreadable(e.to_string()))?;
    if v.version > CATALOG_VERSION {
        return Err(CatalogError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: v.version,
            supported: CATALOG_VERSION,
        });
    }
    serde_json::from_str(text).map_err(|e| unreadable(e.to_string()))
}

/// Write `bytes` to a temporary file next to `path`, fsync it, and rename it over `path`.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), CatalogError> {
    write_atomic(path, bytes, None)
}

/// [`write_file_atomic`] with Unix permission bits `mode` on the new file (e.g. `0o600` for a
/// file holding a secret: the temporary file has them before the first byte is written).
pub fn write_file_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CatalogError> {
    write_atomic(path, bytes, Some(mode))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), CatalogError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|e| CatalogError::io("create directory", dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = match mode {
            None => File::create(&tmp)?,
            Some(mode) => {
                use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(mode)
                    .open(&tmp)?;
                // the umask may have narrowed `mode` at creation; set it exactly
                f.set_permissions(fs::Permissions::from_mode(mode))?;
                f
            }
        };
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Persist the rename itself; not every filesystem supports fsync on a directory.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CatalogError::io("write", path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelFormat;

    fn spec(id: &str) -> ModelSpec {
        ModelSpec {
            id: id.into(),
            name: id.into(),
            repo: Some("org/repo".into()),
            revision: "main".into(),
            files: vec!["m.gguf".into()],
            format: ModelFormat::Gguf,
            architecture: "llama".into(),
            size_bytes: 1,
            sha256: None,
        }
    }

    fn store(dir: &Path) -> CatalogStore {
        CatalogStore::new(dir.join("catalog.json"), dir.join("catalog.lock"))
    }

    #[test]
    fn missing_file_is_empty_and_update_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert_eq!(s.load().unwrap(), Catalog::default());
        s.update(|c| c.add(spec("a"))).unwrap();
        let c = s.load().unwrap();
        assert_eq!(c.version, CATALOG_VERSION);
        assert_eq!(c.models.len(), 1);
        assert!(c
            .entries()
            .iter()
            .any(|(m, builtin)| m.id == "smollm2-135m" && *builtin));
    }

    #[test]
    fn duplicates_builtins_and_bad_ids_are_refused() {
        let mut c = Catalog::default();
        c.add(spec("a")).unwrap();
        assert!(matches!(
            c.add(spec("a")),
            Err(CatalogError::AlreadyExists(_))
        ));
        assert!(matches!(
            c.add(spec("smollm2-135m")),
            Err(CatalogError::AlreadyExists(_))
        ));
        assert!(matches!(
            c.add(spec("Bad Id")),
            Err(CatalogError::InvalidId(_))
        ));
        assert!(matches!(
            c.remove("tinyllama"),
            Err(CatalogError::BuiltIn(_))
        ));
        assert!(matches!(c.remove("nope"), Err(CatalogError::NotFound(_))));
        assert_eq!(c.remove("a").unwrap().id, "a");
    }

    #[test]
    fn unreadable_or_newer_catalog_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for garbage in ["{not json", r#"{"version": 99, "models": []}"#] {
            fs::write(s.path(), garbage).unwrap();
            let err = s.update(|c| c.add(spec("a"))).unwrap_err();
            assert!(
                matches!(
                    err,
                    CatalogError::Unreadable { .. } | CatalogError::UnsupportedVersion { .. }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("not modified"), "{err}");
            assert_eq!(fs::read_to_string(s.path()).unwrap(), garbage);
        }
    }

    /// Fuzz-style (bounded: 2000 seeded cases): a catalog file damaged by random edits, or any
    /// JSON value at all, loads or is refused with a message, never a panic; what loads can
    /// be listed and queried.
    #[test]
    fn damaged_catalog_files_load_or_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.update(|c| {
            c.add(spec("a"))?;
            c.add(spec("b"))
        })
        .unwrap();
        let good = fs::read_to_string(s.path()).unwrap();
        let mut rng = llorch_testkit::FuzzRng::new(41);
        let (mut loaded, mut refused) = (0, 0);
        for case in 0..2000 {
            let text = if rng.below(5) == 0 {
                rng.json(3).to_string()
            } else {
                rng.mutate_text(&good)
            };
            match parse_catalog(s.path(), &text) {
                Ok(c) => {
                    loaded += 1;
                    for (m, _) in c.entries() {
                        let _ = c.get(&m.id);
                    }
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().is_empty(), "case {case}: {text}");
                }
            }
        }
        eprintln!("damaged_catalog_files_load_or_are_refused: {loaded} loaded, {refused} refused");
        assert!(
            loaded > 0 && refused > 0,
            "{loaded} loaded, {refused} refused"
        );
    }

    #[test]
    fn concurrent_updates_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = store(dir.path());
                std::thread::spawn(move || s.update(|c| c.add(spec(&format!("m{i}")))).unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store(dir.path()).load().unwrap().models.len(), 8);
    }
}
