//! What a process exec'd into a sandbox with a pool identity may be (pure).
//!
//! The sandbox's own process runs as its identity with no capabilities and `no_new_privs`
//! (policy). A process exec'd into it is held to the same: a process spec (what the containerd
//! shim passes, with the user and capabilities of the original image, often uid 0) or `--user`
//! / `--cap` would otherwise run as host root next to the instance, the owner of its rootfs and
//! outside its deny entries. Without a user namespace the process runs as the sandbox's user;
//! with one it keeps the user it names (an id inside the namespace, on the sandbox's own range).
//! A sandbox that keeps the spec's user (`io.paddock.user=spec`) is not confined.

use oci_spec::runtime::{Capabilities, LinuxCapabilities, Process};

/// How the sandbox runs: its process (user, capabilities) and whether it has a user namespace.
#[derive(Debug, Clone)]
pub struct Confinement {
    pub uid: u32,
    pub gid: u32,
    pub userns: bool,
}

impl Confinement {
    /// The confinement of a sandbox whose (planned) process is `process`.
    pub fn of(process: &Process, userns: bool) -> Self {
        Self {
            uid: process.user().uid(),
            gid: process.user().gid(),
            userns,
        }
    }

    /// The user an exec'd process runs as, given what it asked for.
    pub fn user(&self, uid: Option<u32>, gid: Option<u32>) -> (u32, u32) {
        if self.userns {
            (uid.unwrap_or(self.uid), gid.unwrap_or(self.gid))
        } else {
            (self.uid, self.gid)
        }
    }

    /// Rewrites an exec process spec: no capabilities (as the sandbox), `no_new_privs`, its user
    /// (without a user namespace: uid, gid, no supplementary groups).
    pub fn apply(&self, process: &mut Process) {
        let mut user = process.user().clone();
        let (uid, gid) = self.user(Some(user.uid()), Some(user.gid()));
        user.set_uid(uid);
        user.set_gid(gid);
        if !self.userns {
            user.set_additional_gids(None);
        }
        process.set_user(user);
        process.set_capabilities(Some(no_capabilities()));
        process.set_no_new_privileges(Some(true));
    }
}

fn no_capabilities() -> LinuxCapabilities {
    let none = Capabilities::new();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(none.clone()));
    caps.set_effective(Some(none.clone()));
    caps.set_permitted(Some(none.clone()));
    caps.set_inheritable(Some(none.clone()));
    caps.set_ambient(Some(none));
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Capability, ProcessBuilder, UserBuilder};

    fn process(uid: u32, gid: u32, extra: Vec<u32>, caps: &[Capability]) -> Process {
        let set: Capabilities = caps.iter().copied().collect();
        let mut lc = LinuxCapabilities::default();
        lc.set_bounding(Some(set.clone()));
        lc.set_effective(Some(set.clone()));
        lc.set_permitted(Some(set));
        ProcessBuilder::default()
            .user(
                UserBuilder::default()
                    .uid(uid)
                    .gid(gid)
                    .additional_gids(extra)
                    .build()
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .capabilities(lc)
            .no_new_privileges(false)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn empty(caps: &Option<LinuxCapabilities>) -> bool {
        let c = caps.clone().unwrap_or_default();
        [
            c.bounding(),
            c.effective(),
            c.permitted(),
            c.inheritable(),
            c.ambient(),
        ]
        .iter()
        .all(|s| s.as_ref().is_some_and(|s| s.is_empty()))
    }

    #[test]
    fn a_pool_identity_sandbox_execs_as_its_identity_without_capabilities() {
        let sandbox = process(2_010_000_005, 2_010_000_005, vec![], &[]);
        let c = Confinement::of(&sandbox, false);
        // What containerd passes: the image's root with the default capabilities.
        let mut p = process(
            0,
            0,
            vec![4, 27],
            &[Capability::SysAdmin, Capability::DacOverride],
        );
        c.apply(&mut p);
        assert_eq!(
            (p.user().uid(), p.user().gid()),
            (2_010_000_005, 2_010_000_005)
        );
        assert_eq!(p.user().additional_gids(), &None);
        assert!(empty(p.capabilities()), "{:?}", p.capabilities());
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(c.user(Some(0), Some(0)), (2_010_000_005, 2_010_000_005));
        assert_eq!(c.user(None, None), (2_010_000_005, 2_010_000_005));
    }

    #[test]
    fn in_a_user_namespace_the_asked_user_stays_inside_it() {
        let sandbox = process(1000, 1000, vec![], &[]);
        let c = Confinement::of(&sandbox, true);
        let mut p = process(0, 0, vec![5], &[Capability::SysAdmin]);
        c.apply(&mut p);
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        assert_eq!(p.user().additional_gids(), &Some(vec![5]));
        assert!(empty(p.capabilities()));
        assert_eq!(c.user(None, None), (1000, 1000));
        assert_eq!(c.user(Some(0), None), (0, 1000));
    }
}
