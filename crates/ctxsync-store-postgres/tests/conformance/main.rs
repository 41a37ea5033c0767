//! One conformance suite of store behaviour, run against both backends: every case in
//! [`cases`] is written once, against `&dyn Backend`, and the macro below makes one
//! `#[test]` per case and backend (`sqlite::NAME`, `postgres::NAME`). The PostgreSQL
//! tests use a database of their own each (created and dropped by the test) and are
//! skipped, saying so, when `CTXSYNC_TEST_PG_URL` is unset.

mod backends;
mod cases;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::cases::$name(&super::backends::Sqlite::new());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let Some(backend) = super::backends::Postgres::new() else {
                        return;
                    };
                    super::cases::$name(&backend);
                }
            )*
        }
    };
}

conformance!(
    concurrent_pushes_get_gap_free_revisions_and_verify,
    reopening_keeps_everything,
    request_id_replays_the_stored_answer,
    a_request_id_reused_for_other_changes_is_refused,
    deferred_conflicts_are_stored_and_resolved,
    only_its_agent_or_an_admin_settles_a_deferred_conflict,
    a_push_based_behind_conflicts_on_overlapping_writes,
    atomic_is_all_or_nothing_and_force_keeps_the_old_value,
    invalid_and_oversized_pushes_change_nothing,
    agent_names_that_are_not_names_are_refused,
    root_writes_and_reverts_do_not_bypass_ownership,
    revert_makes_a_new_revision_equal_to_an_old_one,
    history_is_newest_first_and_filtered,
    metrics_count_syncs_by_level_and_conflicts,
    tokens_are_hashed_listed_revoked_and_authenticated,
    reads_below_the_horizon_are_gone,
    two_stores_on_one_database_lose_no_update,
    one_of_many_claimants_wins,
    stale_view_and_unseen_critical,
    a_push_over_the_quota_archives_first_and_lands,
    a_push_that_does_not_fit_even_after_archival_is_refused_with_numbers,
    an_archival_is_verified_reverted_and_rearchived_without_loss,
    seed_fields_are_stamped_by_syncs_in_the_same_revision_not_by_reverts,
    ten_thousand_revisions_with_retention_1000_keep_at_most_1000_plus_k,
    compact_on_demand_moves_the_horizon_to_a_snapshot_and_never_past_the_retention,
);
