pub mod admin;
pub mod events;
pub mod health;
pub mod queries;
