//! The premium currency players buy products with.

use bevy::prelude::*;

/// Name and symbol of the premium currency (Roblox: "Robux", "R$").
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PremiumCurrency {
    /// Full name, e.g. "Robux".
    pub name: String,
    /// Short symbol shown before amounts, e.g. "R$".
    pub symbol: String,
}

impl Default for PremiumCurrency {
    fn default() -> Self {
        Self {
            name: "Gems".into(),
            symbol: "◆".into(),
        }
    }
}

impl PremiumCurrency {
    /// A currency with this name and symbol.
    pub fn new(name: impl Into<String>, symbol: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            symbol: symbol.into(),
        }
    }

    /// `amount` with the symbol, e.g. "R$ 50".
    pub fn format(&self, amount: u64) -> String {
        format!("{} {amount}", self.symbol)
    }
}

/// A player's premium balance as last reported by the ledger. The ledger is the authority; this
/// mirror is for display and for refusing purchases early.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PremiumBalance(pub u64);
