//! The tenant lifecycle: the states of API.md, the events that move a tenant between them, and the one
//! transition table that decides. Nothing else in the code assigns a state.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    PendingPayment,
    Provisioning,
    Trialing,
    Active,
    PastDue,
    Suspended,
    Cancelled,
    Erased,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleEvent {
    /// The first invoice of a paid signup was paid.
    PaymentConfirmed,
    /// The provisioning job finished for a tenant on a trial.
    ProvisionedTrial,
    /// The provisioning job finished for a paying (or free) tenant.
    ProvisionedActive,
    /// A free plan's trial reached its end: there is nothing to pay, so the tenant is simply active.
    TrialEnded,
    PaymentSucceeded,
    /// The operator (or Stripe) voided the last unpaid invoice: nothing is owed any more.
    UnpaidVoided,
    PaymentFailed,
    /// `billing.grace_days` passed with the invoice unpaid.
    GraceExpired,
    OperatorSuspended,
    OperatorReactivated,
    Cancelled,
    WinBackAccepted,
    /// A suspended or cancelled tenant whose trial was running when it left comes back (the operator's
    /// reactivation, or a win-back) before the trial's end: it is in its trial again, which ends (and is
    /// billed) when it would have.
    TrialResumed,
    Erased,
}

impl LifecycleEvent {
    pub const ALL: [LifecycleEvent; 14] = [
        Self::PaymentConfirmed,
        Self::ProvisionedTrial,
        Self::ProvisionedActive,
        Self::TrialEnded,
        Self::PaymentSucceeded,
        Self::UnpaidVoided,
        Self::PaymentFailed,
        Self::GraceExpired,
        Self::OperatorSuspended,
        Self::OperatorReactivated,
        Self::Cancelled,
        Self::WinBackAccepted,
        Self::TrialResumed,
        Self::Erased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentConfirmed => "payment_confirmed",
            Self::ProvisionedTrial => "provisioned_trial",
            Self::ProvisionedActive => "provisioned_active",
            Self::TrialEnded => "trial_ended",
            Self::PaymentSucceeded => "payment_succeeded",
            Self::UnpaidVoided => "unpaid_voided",
            Self::PaymentFailed => "payment_failed",
            Self::GraceExpired => "grace_expired",
            Self::OperatorSuspended => "operator_suspended",
            Self::OperatorReactivated => "operator_reactivated",
            Self::Cancelled => "cancelled",
            Self::WinBackAccepted => "win_back_accepted",
            Self::TrialResumed => "trial_resumed",
            Self::Erased => "erased",
        }
    }
}

impl TenantState {
    pub const ALL: [TenantState; 8] = [
        Self::PendingPayment,
        Self::Provisioning,
        Self::Trialing,
        Self::Active,
        Self::PastDue,
        Self::Suspended,
        Self::Cancelled,
        Self::Erased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Provisioning => "provisioning",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Suspended => "suspended",
            Self::Cancelled => "cancelled",
            Self::Erased => "erased",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// The transition table: the state `event` leads to from `self`, or `None` if it is not allowed.
    pub fn on(self, event: LifecycleEvent) -> Option<TenantState> {
        use LifecycleEvent as E;
        use TenantState as S;
        let next = match (self, event) {
            (S::PendingPayment, E::PaymentConfirmed) => S::Provisioning,
            (S::Provisioning, E::ProvisionedTrial) => S::Trialing,
            (S::Provisioning, E::ProvisionedActive) => S::Active,
            (S::Trialing, E::TrialEnded) => S::Active,
            (S::Trialing | S::PastDue | S::Suspended, E::PaymentSucceeded) => S::Active,
            (S::PastDue | S::Suspended, E::UnpaidVoided) => S::Active,
            (S::Trialing | S::Active, E::PaymentFailed) => S::PastDue,
            (S::PastDue, E::GraceExpired) => S::Suspended,
            (S::Trialing | S::Active | S::PastDue, E::OperatorSuspended) => S::Suspended,
            (S::Suspended, E::OperatorReactivated) => S::Active,
            (S::PendingPayment | S::Trialing | S::Active | S::PastDue | S::Suspended, E::Cancelled) => S::Cancelled,
            (S::Cancelled, E::WinBackAccepted) => S::Active,
            (S::Suspended | S::Cancelled, E::TrialResumed) => S::Trialing,
            (
                S::PendingPayment
                | S::Provisioning
                | S::Trialing
                | S::Active
                | S::PastDue
                | S::Suspended
                | S::Cancelled,
                E::Erased,
            ) => S::Erased,
            _ => return None,
        };
        Some(next)
    }

    /// Whether the tenant's documents and queries are served in this state.
    pub fn serves_requests(self) -> bool {
        matches!(self, Self::Trialing | Self::Active | Self::PastDue)
    }

    /// The lifecycle gate: may a request of `class` proceed in this state? The error is the answer
    /// API.md prescribes.
    pub fn gate(self, class: EndpointClass) -> Result<(), ErrorCode> {
        use EndpointClass as C;
        match (self, class) {
            (Self::Erased, _) => Err(ErrorCode::Unauthenticated),
            (_, C::TenantInfo) => Ok(()),
            (Self::Trialing | Self::Active | Self::PastDue, _) => Ok(()),
            (Self::Suspended, C::Account) | (Self::Cancelled, C::Account) => Ok(()),
            (Self::Suspended, C::Service) => Err(ErrorCode::PaymentRequired),
            (Self::Cancelled, C::Service) => Err(ErrorCode::Forbidden),
            (Self::PendingPayment, _) => Err(ErrorCode::PaymentRequired),
            (Self::Provisioning, _) => Err(ErrorCode::Unavailable),
        }
    }
}

/// What an endpoint is, as far as the lifecycle gate cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointClass {
    /// `GET /v1/tenant`: always answered while the tenant exists.
    TenantInfo,
    /// Invoices, export and erasure: still open to suspended and cancelled tenants.
    Account,
    /// Everything else.
    Service,
}

#[cfg(test)]
mod tests {
    use super::*;
    use TenantState as S;

    const EVENTS: [LifecycleEvent; 14] = LifecycleEvent::ALL;

    #[test]
    fn nothing_leaves_erased() {
        for e in EVENTS {
            assert_eq!(S::Erased.on(e), None, "{e:?}");
        }
    }

    #[test]
    fn every_state_is_reachable_from_signup() {
        let mut seen = vec![S::PendingPayment, S::Provisioning];
        let mut frontier = seen.clone();
        while let Some(s) = frontier.pop() {
            for e in EVENTS {
                if let Some(n) = s.on(e) {
                    if !seen.contains(&n) {
                        seen.push(n);
                        frontier.push(n);
                    }
                }
            }
        }
        for s in S::ALL {
            assert!(seen.contains(&s), "{s:?} unreachable");
        }
    }

    #[test]
    fn names_round_trip() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn gate_matches_the_api_table() {
        use EndpointClass as C;
        for s in [S::Trialing, S::Active, S::PastDue] {
            assert_eq!(s.gate(C::Service), Ok(()));
        }
        assert_eq!(S::Suspended.gate(C::Service), Err(ErrorCode::PaymentRequired));
        assert_eq!(S::Suspended.gate(C::Account), Ok(()));
        assert_eq!(S::Cancelled.gate(C::Service), Err(ErrorCode::Forbidden));
        assert_eq!(S::Cancelled.gate(C::TenantInfo), Ok(()));
        assert_eq!(S::Erased.gate(C::TenantInfo), Err(ErrorCode::Unauthenticated));
        assert_eq!(S::PendingPayment.gate(C::Account), Err(ErrorCode::PaymentRequired));
        assert_eq!(S::PendingPayment.gate(C::TenantInfo), Ok(()));
        assert_eq!(S::Provisioning.gate(C::Service), Err(ErrorCode::Unavailable));
    }

    proptest::proptest! {
        /// Any sequence of events, applied where the table allows them, from either way a signup starts:
        /// the tenant only ever stands in a known state, `erased` is final, and the gate answers every class in
        /// every state it passes through (served states serve; `erased` never does).
        #[test]
        fn random_event_sequences_respect_the_table(
            start_paid in proptest::bool::ANY,
            events in proptest::collection::vec(0usize..EVENTS.len(), 0..40),
        ) {
            use EndpointClass as C;
            let mut state = if start_paid { S::PendingPayment } else { S::Provisioning };
            let mut erased = false;
            for i in events {
                let next = state.on(EVENTS[i]);
                if erased {
                    proptest::prop_assert_eq!(next, None, "something left erased");
                }
                if let Some(next) = next {
                    proptest::prop_assert!(S::ALL.contains(&next));
                    state = next;
                }
                erased |= state == S::Erased;
                proptest::prop_assert_eq!(state.serves_requests(), state.gate(C::Service).is_ok());
                proptest::prop_assert_eq!(state == S::Erased, state.gate(C::TenantInfo).is_err());
            }
        }
    }
}
