//! Step attempts bound for the same target (one zone of one DNS server or hosted zone) that
//! arrive within a short window of each other, gathered into one batch and sent together by a
//! task of their own: when a whole site fails over, hundreds of groups change the same zone in
//! the same second, and a provider applies one request at a time (BIND writes its journal for
//! each update; Route 53 allows five requests a second per account). Each item carries its own
//! way to answer its step; what a batch is, and how its answer is shared out, belongs to the
//! executor (`rfc2136`, `route53`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// Batches gathering, per target key.
pub struct Gather<T> {
    window: Duration,
    most: usize,
    open: Mutex<Open<T>>,
}

struct Open<T> {
    /// The last ticket given; a batch is numbered by its first item's ticket.
    tickets: u64,
    batches: BTreeMap<String, Batch<T>>,
}

struct Batch<T> {
    number: u64,
    items: Vec<(u64, T)>,
}

/// Takes an item back out of its batch if the batch has not been sent yet: a step attempt that
/// is aborted (its epoch superseded, or its timeout reached) must not act after it ended.
/// Dropping it after the batch went out changes nothing.
#[must_use = "dropping it withdraws the item at once"]
pub struct Withdraw<T: 'static> {
    gather: &'static Gather<T>,
    key: String,
    ticket: u64,
}

impl<T> Drop for Withdraw<T> {
    fn drop(&mut self) {
        let mut open = self.gather.open.lock().expect("gather lock poisoned");
        if let Some(batch) = open.batches.get_mut(&self.key) {
            batch.items.retain(|(ticket, _)| *ticket != self.ticket);
        }
    }
}

impl<T: Send + 'static> Gather<T> {
    /// Batches of at most `most` items, each sent `window` after its first item arrived.
    pub const fn new(window: Duration, most: usize) -> Gather<T> {
        Gather { window, most, open: Mutex::new(Open { tickets: 0, batches: BTreeMap::new() }) }
    }

    /// Puts `item` in the batch gathering for `key`, or starts one. A batch goes to `send`
    /// (in a task of its own, so that withdrawing one item leaves the others' batch running)
    /// when its window ends, or at once when it is full and another item arrives. `send` is
    /// the same for every item of a key.
    pub fn join<F, Fut>(&'static self, key: &str, item: T, send: F) -> Withdraw<T>
    where
        F: Fn(Vec<T>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut open = self.open.lock().expect("gather lock poisoned");
        open.tickets += 1;
        let ticket = open.tickets;
        let withdraw = Withdraw { gather: self, key: key.to_string(), ticket };
        match open.batches.get_mut(key) {
            Some(batch) if batch.items.len() < self.most => batch.items.push((ticket, item)),
            // None gathering (or a full one): this item starts the next.
            _ => {
                let batch = Batch { number: ticket, items: vec![(ticket, item)] };
                if let Some(full) = open.batches.insert(key.to_string(), batch) {
                    tokio::spawn(send.clone()(full.items.into_iter().map(|(_, item)| item).collect()));
                }
                let key = key.to_string();
                tokio::spawn(async move {
                    tokio::time::sleep(self.window).await;
                    let items = {
                        let mut open = self.open.lock().expect("gather lock poisoned");
                        // Unless it was sent full already and another batch has taken its place.
                        match open.batches.get(&key) {
                            Some(b) if b.number == ticket => open.batches.remove(&key).expect("checked").items,
                            _ => Vec::new(),
                        }
                    };
                    if !items.is_empty() {
                        send(items.into_iter().map(|(_, item)| item).collect()).await;
                    }
                });
            }
        }
        withdraw
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    type Sent = Arc<Mutex<Vec<Vec<u32>>>>;

    fn sender(sent: &Sent) -> impl Fn(Vec<u32>) -> std::future::Ready<()> + Clone + Send + 'static {
        let sent = sent.clone();
        move |items| {
            sent.lock().unwrap().push(items);
            std::future::ready(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn items_within_the_window_go_together_withdrawn_ones_do_not_and_full_batches_go_at_once() {
        static GATHER: Gather<u32> = Gather::new(Duration::from_millis(20), 3);
        let sent = Sent::default();
        let kept: Vec<_> = (1..=2).map(|i| GATHER.join("zone", i, sender(&sent))).collect();
        let withdrawn = GATHER.join("zone", 3, sender(&sent));
        let other = GATHER.join("other zone", 10, sender(&sent));
        drop(withdrawn);
        // The batch was full (3, until 3 was withdrawn: 2 now) when 4 came: it has room again.
        let four = GATHER.join("zone", 4, sender(&sent));
        tokio::time::sleep(Duration::from_millis(25)).await;
        let mut got = sent.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec![vec![1, 2, 4], vec![10]]);
        drop((kept, four, other));

        // A full batch goes when the next item arrives, which starts a batch of its own.
        sent.lock().unwrap().clear();
        let items: Vec<_> = (20..24).map(|i| GATHER.join("zone", i, sender(&sent))).collect();
        tokio::task::yield_now().await;
        assert_eq!(*sent.lock().unwrap(), vec![vec![20, 21, 22]]);
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(*sent.lock().unwrap(), vec![vec![20, 21, 22], vec![23]]);
        drop(items);
    }
}
