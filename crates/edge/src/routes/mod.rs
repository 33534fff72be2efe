pub mod admin;
pub mod analytics;
pub mod content;
pub mod events;
pub mod health;
pub mod queries;
