//! The settings every request reads, kept in memory and refreshed from the database so
//! that a change made through any replica reaches all of them within seconds.

use std::sync::{Arc, RwLock};

use crate::domain::settings::Settings;

pub struct SettingsCache {
    current: RwLock<Arc<Settings>>,
}

impl SettingsCache {
    pub fn new(settings: Settings) -> Self {
        Self {
            current: RwLock::new(Arc::new(settings)),
        }
    }

    pub fn get(&self) -> Arc<Settings> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set(&self, settings: Settings) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }
}
