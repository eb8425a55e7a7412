package k8s

import (
	"regexp"
	"strings"
)

// CgroupIdentity is what a container's cgroup v2 path says about it.
type CgroupIdentity struct {
	PodUID      string // with dashes, as in metadata.uid
	ContainerID string // 64 hex digits, as in the pod status without the runtime:// prefix
}

var (
	// pod<uid>: cgroupfs keeps the dashes, systemd turns them into
	// underscores (kubepods-burstable-pod<uid>.slice).
	podComponent = regexp.MustCompile(`(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$`)
	containerID  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ParseCgroupPath extracts the pod UID and container ID from a cgroup v2
// path of a Kubernetes container, for the shapes the common runtimes and
// both kubelet cgroup drivers make:
//
//	systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope
//	          (crio-<id>.scope for CRI-O, docker-<id>.scope for cri-dockerd)
//	cgroupfs: /kubepods/burstable/pod<uid>/<id>
//	          (/kubepods/pod<uid>/<id> for Guaranteed pods)
//	nested:   .../kubelet.slice/kubelet-kubepods.slice/.../kubelet-kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope (kind)
//	          .../containerd.service/kubepods-burstable-pod<uid_>.slice:cri-containerd:<id> (containerd's systemd paths)
//
// A path outside any pod yields the zero value; a pod-level path (the pause
// container, or a process in the pod's cgroup itself) yields only the UID.
// CRI-O's conmon scope (crio-conmon-<id>.scope) is the monitor, not the
// container: only the UID.
func ParseCgroupPath(path string) CgroupIdentity {
	var id CgroupIdentity
	parts := strings.Split(strings.Trim(path, "/"), "/")
	podAt := -1
	for i, p := range parts {
		// containerd's systemd form "slice:prefix:id" inside one component.
		slice, _, _ := strings.Cut(p, ":")
		if m := podComponent.FindStringSubmatch(slice); m != nil {
			id.PodUID = strings.ReplaceAll(m[1], "_", "-")
			podAt = i
		}
	}
	if podAt < 0 {
		return CgroupIdentity{}
	}
	last := parts[len(parts)-1]
	if podAt == len(parts)-1 {
		// Only "slice:runtime:id" carries a container in the pod's own component.
		if f := strings.Split(last, ":"); len(f) == 3 && containerID.MatchString(f[2]) {
			id.ContainerID = f[2]
		}
		return id
	}
	c := strings.TrimSuffix(last, ".scope")
	if strings.Contains(c, "-conmon-") {
		return id
	}
	if i := strings.LastIndexByte(c, '-'); i >= 0 {
		c = c[i+1:] // cri-containerd-<id>, crio-<id>, docker-<id>
	}
	if containerID.MatchString(c) {
		id.ContainerID = c
	}
	return id
}
