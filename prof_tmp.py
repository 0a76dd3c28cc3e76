import cProfile, pstats, time, cv2, torch
torch.set_num_threads(1); cv2.setNumThreads(1)
from pathlib import Path
from cnnlab.data.shards import ShardSource
from cnnlab.data.shards.loader import FastCropDataset, EncodedFiles
from cnnlab.data.sources.folders import FolderSource
files = sorted(str(p.relative_to('/tmp/benchc/files')) for p in Path('/tmp/benchc/files').rglob('*.JPEG'))
fs = FolderSource('/tmp/benchc/files', files, [0]*len(files), ['a'])
sh = ShardSource('/tmp/benchc/shards/train')
for name, ds in [('files', FastCropDataset(EncodedFiles(fs), (224,224), 3, 0)), ('shards', FastCropDataset(sh, (224,224), 3, 0))]:
    n = len(sh)
    pr = cProfile.Profile(); pr.enable()
    for i in range(n): ds[(0,i)]
    pr.disable()
    print(name); pstats.Stats(pr).sort_stats('tottime').print_stats(8)
