package k8s

import "testing"

func TestParseCgroupPath(t *testing.T) {
	const (
		uid = "7d1b2c3e-4f50-4a6b-8c9d-0e1f2a3b4c5d"
		usc = "7d1b2c3e_4f50_4a6b_8c9d_0e1f2a3b4c5d"
		cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	)
	for _, tc := range []struct {
		name, path string
		want       CgroupIdentity
	}{
		{"containerd systemd burstable", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + usc + ".slice/cri-containerd-" + cid + ".scope", CgroupIdentity{uid, cid}},
		{"containerd systemd guaranteed", "/kubepods.slice/kubepods-pod" + usc + ".slice/cri-containerd-" + cid + ".scope", CgroupIdentity{uid, cid}},
		{"cri-o systemd besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + usc + ".slice/crio-" + cid + ".scope", CgroupIdentity{uid, cid}},
		{"cri-o conmon is not the container", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + usc + ".slice/crio-conmon-" + cid + ".scope", CgroupIdentity{PodUID: uid}},
		{"cri-dockerd systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + usc + ".slice/docker-" + cid + ".scope", CgroupIdentity{uid, cid}},
		{"cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + cid, CgroupIdentity{uid, cid}},
		{"cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + cid, CgroupIdentity{uid, cid}},
		{"kind nested under kubelet.slice", "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + usc + ".slice/cri-containerd-" + cid + ".scope", CgroupIdentity{uid, cid}},
		{"containerd colon form", "/system.slice/containerd.service/kubepods-burstable-pod" + usc + ".slice:cri-containerd:" + cid, CgroupIdentity{uid, cid}},
		{"pod level only", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + usc + ".slice", CgroupIdentity{PodUID: uid}},
		{"host service", "/system.slice/containerd.service", CgroupIdentity{}},
		{"user session", "/user.slice/user-0.slice/session-1.scope", CgroupIdentity{}},
		{"root", "/", CgroupIdentity{}},
		{"qos slice is not a pod", "/kubepods.slice/kubepods-burstable.slice", CgroupIdentity{}},
		{"short hex is not a container", "/kubepods/pod" + uid + "/abc123", CgroupIdentity{PodUID: uid}},
		{"upper case is not a uid", "/kubepods/pod7D1B2C3E-4F50-4A6B-8C9D-0E1F2A3B4C5D/" + cid, CgroupIdentity{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseCgroupPath(tc.path); got != tc.want {
				t.Fatalf("ParseCgroupPath(%q) = %+v, want %+v", tc.path, got, tc.want)
			}
		})
	}
}

func FuzzParseCgroupPath(f *testing.F) {
	f.Add("/kubepods/burstable/pod7d1b2c3e-4f50-4a6b-8c9d-0e1f2a3b4c5d/0123")
	f.Add("/kubepods.slice/kubepods-pod7d1b2c3e_4f50_4a6b_8c9d_0e1f2a3b4c5d.slice/cri-containerd-x.scope")
	f.Fuzz(func(t *testing.T, path string) {
		id := ParseCgroupPath(path)
		if id.ContainerID != "" && id.PodUID == "" {
			t.Fatalf("container %q without a pod in %q", id.ContainerID, path)
		}
		if id.PodUID != "" && len(id.PodUID) != 36 {
			t.Fatalf("bad uid %q from %q", id.PodUID, path)
		}
	})
}
