//! The two integer helpers every amount goes through: one rounding rule and exact decimal display.

/// `num / den` rounded half away from zero (`den > 0`): the rule of `Micros::to_cents_rounded`,
/// generalised so that an amount whose exact value is a fraction of a micro-dollar (tokens priced per
/// 1,000) is still rounded once, straight to cents, instead of first to micros and then again to cents.
pub(crate) fn div_round_half_away(num: i128, den: i128) -> i128 {
    debug_assert!(den > 0, "denominator must be positive");
    let (q, r) = (num / den, num % den);
    if r.abs() * 2 >= den {
        q + r.signum()
    } else {
        q
    }
}

/// `num / 10^scale` written exactly, without trailing zeros ("0.2", "0.00001", "-1234"): the form of
/// Stripe's `unit_amount_decimal`.
pub(crate) fn decimal(num: i128, scale: u32) -> String {
    let sign = if num < 0 { "-" } else { "" };
    let abs = num.unsigned_abs();
    let unit = 10u128.pow(scale);
    let (int, frac) = (abs / unit, abs % unit);
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let frac = format!("{frac:0width$}", width = scale as usize);
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

/// `12345678` → `"12,345,678"`, for line descriptions.
pub(crate) fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tenantry_domain::Micros;

    use super::*;

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(div_round_half_away(5, 10), 1);
        assert_eq!(div_round_half_away(4, 10), 0);
        assert_eq!(div_round_half_away(-5, 10), -1);
        assert_eq!(div_round_half_away(-4, 10), 0);
        assert_eq!(div_round_half_away(49_995, 100_000), 0);
    }

    #[test]
    fn decimals_are_exact_and_trimmed() {
        assert_eq!(decimal(2_000, 4), "0.2");
        assert_eq!(decimal(100, 7), "0.00001");
        assert_eq!(decimal(49_900, 0), "49900");
        assert_eq!(decimal(-15_000, 4), "-1.5");
        assert_eq!(decimal(0, 7), "0");
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_000), "1,000");
        assert_eq!(group_digits(10_000_000), "10,000,000");
    }

    proptest! {
        /// The generalised rule is the domain's rule where they overlap (micros → cents).
        #[test]
        fn agrees_with_the_domain_rounding(micros in any::<i64>()) {
            let ours = div_round_half_away(i128::from(micros), 10_000);
            prop_assert_eq!(ours, i128::from(Micros(micros).to_cents_rounded().0));
        }
    }
}
