//! The settings every request reads, kept in memory and refreshed from the database so
//! that a change made through any replica reaches all of them within seconds.

use std::sync::{Arc, RwLock};

use crate::domain::settings::Settings;

pub struct SettingsCache {
    /// The settings and the stored version they came from.
    current: RwLock<(Arc<Settings>, i64)>,
}

impl SettingsCache {
    pub fn new(settings: Settings) -> Self {
        Self {
            current: RwLock::new((Arc::new(settings), 0)),
        }
    }

    pub fn get(&self) -> Arc<Settings> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    pub fn set(&self, settings: Settings) {
        self.current.write().unwrap_or_else(|p| p.into_inner()).0 = Arc::new(settings);
    }

    /// Takes `settings` unless a newer version is already held. A refresh that read the
    /// row just before this replica's own `PUT` committed must not undo that `PUT`; a
    /// version counter (not a timestamp) orders them, so replicas' clocks do not matter.
    pub fn offer(&self, settings: Settings, version: i64) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if version >= current.1 {
            *current = (Arc::new(settings), version);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_version_does_not_replace_a_newer_one() {
        let cache = SettingsCache::new(Settings::default());
        let newer = Settings {
            template_cooldown_hours: 1,
            ..Settings::default()
        };
        cache.offer(newer, 3);
        cache.offer(Settings::default(), 2);
        assert_eq!(cache.get().template_cooldown_hours, 1);
        cache.offer(Settings::default(), 3);
        assert_eq!(cache.get().template_cooldown_hours, 12);
    }
}
