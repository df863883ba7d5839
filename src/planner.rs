//! The planner: which targets go into the next request. Pure, no I/O.
//!
//! Dedupe happens in two places that must agree. The claim (one statement in the store) picks the
//! next N distinct targets of a lane in claim order and takes *every* ready job with one of those
//! targets, so all duplicates ride one request and each distinct target costs one quota unit.
//! [`Batch::from_claimed`] then turns claimed jobs back into the request body: each target once,
//! with the ids of every job it serves.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Action, ClaimedJob};

/// The jobs one distinct target serves, keyed by `(action, target)`.
pub type TargetJobs = ((Action, Option<String>), Vec<i64>);

/// One request's worth of claimed jobs, grouped by distinct target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Each distinct `(action, target)` with the jobs it serves. Account-wide jobs (no target)
    /// are keyed by `None`.
    pub targets: BTreeMap<(Action, Option<String>), Vec<i64>>,
    /// URL jobs carried by a directory refresh in place of their own URL (directory
    /// escalation): on success each records the directory that served it.
    pub stand_ins: BTreeSet<i64>,
}

impl Batch {
    /// Groups claimed jobs by target.
    pub fn from_claimed(jobs: &[ClaimedJob]) -> Self {
        let mut targets: BTreeMap<(Action, Option<String>), Vec<i64>> = BTreeMap::new();
        for job in jobs {
            targets
                .entry((job.action, job.target.clone()))
                .or_default()
                .push(job.id);
        }
        Batch {
            targets,
            stand_ins: BTreeSet::new(),
        }
    }

    /// Sends every URL job of the batch as one refresh of `dir` (the directory they share):
    /// they ride its key and each is marked as served by it.
    pub fn escalate(&mut self, dir: &str) {
        let under = self.take(|a, _| a == Action::RefreshUrl);
        let ids = self
            .targets
            .entry((Action::RefreshDir, Some(dir.to_owned())))
            .or_default();
        for (_, jobs) in under {
            self.stand_ins.extend(jobs.iter().copied());
            ids.extend(jobs);
        }
        ids.sort_unstable();
    }

    /// Whether job `id` rides a directory refresh in place of its own URL.
    pub fn stands_in(&self, id: i64) -> bool {
        self.stand_ins.contains(&id)
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The distinct targets of `action`, in a stable order.
    pub fn targets_of(&self, action: Action) -> Vec<String> {
        self.targets
            .keys()
            .filter(|(a, _)| *a == action)
            .filter_map(|(_, t)| t.clone())
            .collect()
    }

    /// Every job id in the batch.
    pub fn job_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.targets.values().flatten().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// How many distinct targets the request carries.
    pub fn target_count(&self) -> usize {
        self.targets.len()
    }

    /// Keeps only the jobs in `held` (sorted), and the targets that still have one.
    pub fn retain_jobs(&mut self, held: &[i64]) {
        self.targets.retain(|_, ids| {
            ids.retain(|id| held.binary_search(id).is_ok());
            !ids.is_empty()
        });
    }

    /// Removes and returns the jobs matching `pick`, keyed by their target.
    pub fn take(&mut self, mut pick: impl FnMut(Action, Option<&str>) -> bool) -> Vec<TargetJobs> {
        let keys: Vec<(Action, Option<String>)> = self
            .targets
            .keys()
            .filter(|(a, t)| pick(*a, t.as_deref()))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| self.targets.remove(&k).map(|ids| (k, ids)))
            .collect()
    }
}

/// The directory of a URL, textually: everything up to its path's last `/` (query and fragment
/// dropped), so the URL always starts with it. `None` without a scheme and host.
pub fn directory_of(url: &str) -> Option<&str> {
    let bare = url.split(['?', '#']).next()?;
    let host_at = bare.find("://")? + 3;
    let path_at = host_at + bare[host_at..].find('/')?;
    if path_at == host_at {
        return None;
    }
    let last = bare.rfind('/')?;
    Some(&bare[..=last.max(path_at)])
}

/// The directory holding the most of `urls`, if it holds at least `threshold` of them, with
/// those URLs.
pub fn crowded_dir(urls: &[String], threshold: u32) -> Option<(String, Vec<String>)> {
    let mut by_dir: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for url in urls {
        if let Some(dir) = directory_of(url) {
            by_dir.entry(dir).or_default().push(url.clone());
        }
    }
    let threshold = usize::try_from(threshold).unwrap_or(usize::MAX);
    by_dir
        .into_iter()
        .filter(|(_, under)| under.len() >= threshold)
        .max_by_key(|(_, under)| under.len())
        .map(|(dir, under)| (dir.to_owned(), under))
}

/// How many requests a drain of `distinct` targets needs at `per_request` targets each.
pub fn minimum_requests(distinct: usize, per_request: usize) -> usize {
    distinct.div_ceil(per_request.max(1))
}

/// A claimed job with a target and no attempt spent, for tests.
#[cfg(test)]
pub(crate) fn job(id: i64, action: Action, target: &str) -> ClaimedJob {
    ClaimedJob {
        id,
        action,
        target: Some(target.to_owned()),
        attempts: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_sends_each_target_once_for_all_its_jobs() {
        let jobs = [
            job(1, Action::RefreshUrl, "http://a/1"),
            job(2, Action::RefreshUrl, "http://a/2"),
            job(3, Action::RefreshUrl, "http://a/1"),
            job(4, Action::RefreshDir, "http://a/d/"),
        ];
        let mut batch = Batch::from_claimed(&jobs);
        assert_eq!(batch.target_count(), 3);
        assert_eq!(
            batch.targets_of(Action::RefreshUrl),
            vec!["http://a/1", "http://a/2"]
        );
        assert_eq!(batch.targets_of(Action::RefreshDir), vec!["http://a/d/"]);
        assert_eq!(batch.job_ids(), vec![1, 2, 3, 4]);
        let taken = batch.take(|_, t| t == Some("http://a/1"));
        assert_eq!(
            taken,
            vec![(
                (Action::RefreshUrl, Some("http://a/1".to_owned())),
                vec![1, 3]
            )]
        );
        assert_eq!(batch.job_ids(), vec![2, 4]);
        batch.retain_jobs(&[4]);
        assert_eq!(batch.target_count(), 1);
        assert_eq!(batch.targets_of(Action::RefreshDir), vec!["http://a/d/"]);
    }

    #[test]
    fn a_url_is_in_the_directory_up_to_its_last_slash() {
        assert_eq!(
            directory_of("https://a.com/d/x.js?v=1/2"),
            Some("https://a.com/d/")
        );
        assert_eq!(directory_of("https://a.com/x.js"), Some("https://a.com/"));
        assert_eq!(
            directory_of("https://a.com/d/e/"),
            Some("https://a.com/d/e/")
        );
        assert_eq!(directory_of("https://a.com"), None);
        assert_eq!(directory_of("a.com/x"), None);
    }

    #[test]
    fn the_crowded_directory_needs_the_threshold_and_its_urls_ride_one_dir_refresh() {
        let urls: Vec<String> = (0..3)
            .map(|i| format!("http://a/d/{i}"))
            .chain(["http://a/e/1".to_owned()])
            .collect();
        assert_eq!(crowded_dir(&urls, 4), None);
        let (dir, under) = crowded_dir(&urls, 3).unwrap();
        assert_eq!((dir.as_str(), under.len()), ("http://a/d/", 3));
        let jobs: Vec<ClaimedJob> = (1..=3)
            .map(|i| job(i, Action::RefreshUrl, &format!("http://a/d/{}", i - 1)))
            .collect();
        let mut batch = Batch::from_claimed(&jobs);
        batch.escalate(&dir);
        assert_eq!(batch.targets_of(Action::RefreshUrl), Vec::<String>::new());
        assert_eq!(batch.targets_of(Action::RefreshDir), vec!["http://a/d/"]);
        assert_eq!(batch.job_ids(), vec![1, 2, 3]);
        assert!((1..=3).all(|id| batch.stands_in(id)));
    }

    #[test]
    fn minimum_requests_rounds_up() {
        assert_eq!(minimum_requests(250, 60), 5);
        assert_eq!(minimum_requests(240, 60), 4);
        assert_eq!(minimum_requests(0, 60), 0);
    }
}
