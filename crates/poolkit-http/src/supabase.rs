//! Supabase.
