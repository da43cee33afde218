//! The `findings` interface: validates and deduplicates reported findings.
//! Oversized fields are cut (never trusted to be small); a flood ends the run
//! at the output quota.

use crate::manifest::{Finding, Location};
use crate::runtime::GuestState;
use crate::runtime::bindings::WitFinding;
use crate::runtime::bindings::toolhost::workflow::findings::Host;

const MAX_ID: usize = 256;
const MAX_TITLE: usize = 1024;
const MAX_MESSAGE: usize = 64 * 1024;
const MAX_PATH: usize = 4096;

use crate::text::clip_bytes as clip;

/// Converts a guest finding to the host form: clipped, host paths
/// replaced by `redactor` (so the fingerprint is the same on every host),
/// fingerprinted.
pub fn from_guest(f: WitFinding, redactor: &super::redact::Redactor) -> Finding {
    let rule_id = clip(f.rule_id, MAX_ID);
    let title = clip(f.title, MAX_TITLE);
    let mut message = clip(f.message, MAX_MESSAGE);
    if message.is_empty() {
        message = title.clone();
    }
    let location = f.location.map(|l| Location {
        path: clip(l.path.replace('\\', "/"), MAX_PATH),
        start_line: l.start_line.filter(|&n| n > 0),
        end_line: l.end_line.filter(|&n| n > 0),
        start_column: l.start_column.filter(|&n| n > 0),
    });
    let mut finding = redactor.finding(Finding {
        rule_id,
        title,
        message,
        severity: f.severity.into(),
        location,
        fingerprint: String::new(),
    });
    finding.fingerprint = match f.fingerprint.filter(|fp| !fp.is_empty()) {
        Some(fp) => clip(fp, MAX_ID),
        None => Finding::derive_fingerprint(
            &finding.rule_id,
            finding.location.as_ref(),
            &finding.message,
        ),
    };
    finding
}

/// What a finding counts against the output quota.
pub fn quota_len(f: &Finding) -> usize {
    f.rule_id.len() + f.title.len() + f.message.len() + 64
}

impl Host for GuestState {
    async fn report(&mut self, finding: WitFinding) -> anyhow::Result<()> {
        let f = from_guest(finding, &self.run.journal.redactor());
        let len = quota_len(&f);
        self.run.journal.add_finding(f, len)?;
        Ok(())
    }
}
