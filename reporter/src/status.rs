//! What a decision or a run update looks like as a build status (DESIGN §4.3): key
//! `inlet-{stack_id}-{run_type}`, name "{stack name} ({run type})", the run id as build number;
//! requested, queued, running → INPROGRESS; succeeded → SUCCESSFUL; failed → FAILED; canceled →
//! CANCELLED; blocked → FAILED with the reason as description.

use inlet_bitbucket::builds::{BuildState, BuildStatus};
use inlet_core::records::{RunState, RunType};

/// A step of a run the reporter shows: the decision (requested or blocked) or a scheduler's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Decided `requested`.
    Requested,
    /// Decided `blocked`.
    Blocked,
    /// Reported by the run scheduler.
    Update(RunState),
}

impl Step {
    /// `requested`, `blocked` or the run state.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Requested => "requested",
            Step::Blocked => "blocked",
            Step::Update(state) => state.as_str(),
        }
    }

    /// Order within a run: a step never replaces one of a higher rank (a `running` consumed
    /// after `succeeded` is not shown). Finished states rank highest.
    pub fn rank(self) -> u8 {
        match self {
            Step::Requested => 0,
            Step::Update(RunState::Queued) => 1,
            Step::Update(RunState::Running) => 2,
            Step::Blocked
            | Step::Update(RunState::Succeeded | RunState::Failed | RunState::Canceled) => 3,
        }
    }

    /// Bitbucket's state for it.
    pub fn build_state(self) -> BuildState {
        match self {
            Step::Requested | Step::Update(RunState::Queued) | Step::Update(RunState::Running) => {
                BuildState::InProgress
            }
            Step::Update(RunState::Succeeded) => BuildState::Successful,
            Step::Blocked | Step::Update(RunState::Failed) => BuildState::Failed,
            Step::Update(RunState::Canceled) => BuildState::Cancelled,
        }
    }
}

/// `inlet-{stack_id}-{run_type}`.
pub fn key(stack_id: &str, run_type: RunType) -> String {
    format!("inlet-{stack_id}-{}", run_type.as_str())
}

/// The build status of `step` for run `run_id` of stack `stack_name`.
pub struct Shown<'a> {
    /// The stack's id.
    pub stack_id: &'a str,
    /// The stack's name.
    pub stack_name: &'a str,
    /// Tracked or proposed.
    pub run_type: RunType,
    /// The run.
    pub run_id: &'a str,
    /// The step shown.
    pub step: Step,
    /// The link.
    pub url: String,
    /// The description: the blocked reason, the scheduler's summary, or the step.
    pub description: String,
    /// `refs/heads/{branch}`.
    pub git_ref: Option<String>,
}

impl Shown<'_> {
    /// The status to post.
    pub fn status(&self) -> BuildStatus {
        BuildStatus {
            key: key(self.stack_id, self.run_type),
            state: self.step.build_state(),
            name: format!("{} ({})", self.stack_name, self.run_type.as_str()),
            url: self.url.clone(),
            description: self.description.clone(),
            build_number: self.run_id.to_owned(),
            git_ref: self.git_ref.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mapping of DESIGN §4.3, and the ranks that keep a run from going backwards.
    #[test]
    fn mapping_and_ranks() {
        use RunState::*;
        let cases = [
            (Step::Requested, BuildState::InProgress),
            (Step::Update(Queued), BuildState::InProgress),
            (Step::Update(Running), BuildState::InProgress),
            (Step::Update(Succeeded), BuildState::Successful),
            (Step::Update(Failed), BuildState::Failed),
            (Step::Update(Canceled), BuildState::Cancelled),
            (Step::Blocked, BuildState::Failed),
        ];
        for (step, state) in cases {
            assert_eq!(step.build_state(), state, "{step:?}");
        }
        assert!(Step::Requested.rank() < Step::Update(Running).rank());
        assert!(Step::Update(Running).rank() < Step::Update(Succeeded).rank());
        assert_eq!(key("dns", RunType::Proposed), "inlet-dns-proposed");
    }
}
